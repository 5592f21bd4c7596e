# em_add_test(NAME name SOURCES a.cpp ... [LIBS ...] [LABELS unit|golden|mpi|gpu|slow ...]
#             [TIMEOUT s] [MPI_NP n] [ARGS ...])
# One helper registers every test (LevelDB's leveldb_test idea): a gtest executable in build/bin,
# a ctest entry with labels, and for MPI_NP an `mpirun --oversubscribe -np n` launch.
set(EXPERTMESH_SHARED_DIR "${CMAKE_SOURCE_DIR}/../shared" CACHE PATH "Path to the shared/ folder (golden data)")

function(em_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT;MPI_NP" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  if(NOT TARGET ${T_NAME})
    add_executable(${T_NAME} ${T_SOURCES})
    target_link_libraries(${T_NAME} PRIVATE expertmesh_core expertmesh_testutil GTest::gtest GTest::gtest_main ${T_LIBS})
  endif()
  set(_cmd $<TARGET_FILE:${T_NAME}>)
  set(_test_name ${T_NAME})
  if(T_MPI_NP)
    set(_test_name ${T_NAME}_np${T_MPI_NP})
    set(_cmd ${MPIEXEC_EXECUTABLE} --oversubscribe ${EXPERTMESH_MPIRUN_ROOT_FLAG} -np ${T_MPI_NP} $<TARGET_FILE:${T_NAME}>)
  endif()
  add_test(NAME ${_test_name} COMMAND ${_cmd} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  set_tests_properties(${_test_name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "EXPERTMESH_SHARED_DIR=${EXPERTMESH_SHARED_DIR};EXPERTMESH_BIN=${CMAKE_BINARY_DIR}/bin;EXPERTMESH_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()

# mpirun refuses to run as root without this flag; CI machines run as root.
execute_process(COMMAND id -u OUTPUT_VARIABLE _em_uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(_em_uid STREQUAL "0")
  set(EXPERTMESH_MPIRUN_ROOT_FLAG --allow-run-as-root)
else()
  set(EXPERTMESH_MPIRUN_ROOT_FLAG "")
endif()
