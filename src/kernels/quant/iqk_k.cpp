// (being written) register_iqk_k fills this family's QuantTable entries.
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
void register_iqk_k(QuantTable&) {}
}  // namespace expertmesh::quant
