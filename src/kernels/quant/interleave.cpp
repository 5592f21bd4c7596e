// (being written) register_interleaved fills this family's QuantTable entries.
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
void register_interleaved(QuantTable&) {}
}  // namespace expertmesh::quant
