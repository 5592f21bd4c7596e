// (being written) register_iqk_ks fills this family's QuantTable entries.
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
void register_iqk_ks(QuantTable&) {}
}  // namespace expertmesh::quant
