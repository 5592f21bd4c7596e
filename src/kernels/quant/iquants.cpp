// (being written) register_iquants fills this family's QuantTable entries.
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
void register_iquants(QuantTable&) {}
}  // namespace expertmesh::quant
