// Machine topology with hwloc: NUMA nodes (memory, cores, CPUs), GPUs and their NUMA locality,
// and binding of this process to one NUMA node (threads and memory).
//
// Works without GPUs and without a CUDA build: GPUs are found through hwloc's I/O discovery
// (CUDA / NVML OS devices when hwloc has those plugins, otherwise NVIDIA PCI display/3D
// controllers, whose memory is then unknown = 0).
//
// Thread-safety: discover() builds and frees its own hwloc topology; the functions are reentrant.
// Binding changes process-wide state (CPU affinity of the calling thread, inherited by threads it
// creates later, and the memory policy), so call bind_*() from main before starting threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace expertmesh::topology {

struct NumaNode {
  int os_index = 0;          // Linux NUMA node id (hwloc os_index)
  int64_t memory_bytes = 0;  // local memory of the node (> 0 on any real machine)
  int cores = 0;             // physical cores whose PUs lie in this node
  std::vector<int> cpus;     // OS indices of its PUs (hardware threads), ascending
};

struct Gpu {
  int index = 0;             // ordinal among the GPUs found (CUDA ordinal when hwloc reports CUDA devices)
  std::string name;          // "NVIDIA H100 80GB HBM3", or "PCI 10de:2330" when only the PCI id is known
  std::string pci_bus_id;    // "0000:3b:00.0"; empty when unknown
  int64_t memory_bytes = 0;  // 0 = unknown
  int numa_node = 0;         // os_index of the NUMA node closest to it (0 when hwloc cannot tell)
};

struct Machine {
  std::string hostname;
  std::vector<NumaNode> numa;  // ascending os_index; at least one (hwloc shows one on non-NUMA machines)
  std::vector<Gpu> gpus;       // ascending index; empty without GPUs
  int n_cores = 0;             // physical cores of the machine
  int n_pus = 0;               // hardware threads
  int64_t memory_bytes = 0;    // sum of the NUMA nodes' memory

  const NumaNode* node(int os_index) const;  // nullptr when absent
  // The NUMA node holding CPU `cpu` (OS index), or -1.
  int node_of_cpu(int cpu) const;
};

// Discovers this machine. find_gpus = false skips hwloc's I/O (PCI) discovery, which is the slow
// part (tens of ms), leaving `gpus` empty. Errors (IoError) name the failing hwloc call.
Result<Machine> discover(bool find_gpus = true);

// CPUs this process may run on now (sched_getaffinity of the calling thread), ascending.
Result<std::vector<int>> allowed_cpus();

// The physical cores this process may run on now: for each core with an allowed PU, its
// allowed PUs (OS indices, ascending); cores in hwloc's logical order. For pinning a thread
// pool one thread per core.
Result<std::vector<std::vector<int>>> allowed_cores();

// The NUMA node this process was launched bound to: when every allowed CPU lies in one node and
// that is not every CPU of the machine (mpirun --bind-to numa / a rankfile / numactl -N), its
// os_index; otherwise -1 (unbound, or bound across nodes).
int launched_node(const Machine& m, const std::vector<int>& allowed);

// Binds the calling thread's CPU affinity to node's CPUs (threads created afterwards inherit it)
// and sets the memory policy to prefer that node (MPOL_PREFERRED, so allocation beyond the node's
// memory still succeeds). Errors name the node.
Status bind_to_node(const Machine& m, int os_index);

// Startup hook: when the process was launched bound to one NUMA node of a multi-node machine,
// binds memory there too (CPU affinity is already set by the launcher) and returns the node;
// returns -1 and changes nothing otherwise (1-NUMA machines, unbound ranks).
Result<int> bind_if_launched_bound(const Machine& m);

// One line per node and GPU, for logs and `expertmesh plan`.
std::string describe(const Machine& m);

}  // namespace expertmesh::topology
