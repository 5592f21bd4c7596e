// (being written) register_trellis fills this family's QuantTable entries.
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
void register_trellis(QuantTable&) {}
}  // namespace expertmesh::quant
