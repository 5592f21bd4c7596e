// hwloc discovery and NUMA binding (see topology.h).
#include "comm/topology.h"

#include <fmt/format.h>
#include <hwloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace expertmesh::topology {

namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using TopologyPtr = std::unique_ptr<hwloc_topology, TopologyDeleter>;

// Loads this machine's topology; with_io keeps PCI devices and OS devices (GPUs).
Result<TopologyPtr> load_topology(bool with_io) {
  hwloc_topology_t t = nullptr;
  if (hwloc_topology_init(&t) != 0) return Status::IoError("hwloc_topology_init failed");
  TopologyPtr owned(t);
  if (with_io && hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) != 0)
    return Status::IoError("hwloc_topology_set_io_types_filter failed");
  if (hwloc_topology_load(t) != 0)
    return Status::IoError(fmt::format("hwloc_topology_load failed: {}", std::strerror(errno)));
  return owned;
}

std::vector<int> bits(hwloc_const_bitmap_t set) {
  std::vector<int> out;
  for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) out.push_back(i);
  return out;
}

const char* info(hwloc_obj_t o, const char* key) {
  const char* v = hwloc_obj_get_info_by_name(o, key);
  return v ? v : "";
}

int locality(hwloc_topology_t t, hwloc_obj_t o) {
  hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, o);
  if (!anc || !anc->nodeset) return 0;
  const int n = hwloc_bitmap_first(anc->nodeset);
  return n < 0 ? 0 : n;
}

std::string pci_id(hwloc_obj_t o) {
  for (; o; o = o->parent)
    if (o->type == HWLOC_OBJ_PCI_DEVICE) {
      const auto& p = o->attr->pcidev;
      return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", p.domain, p.bus, p.dev, p.func);
    }
  return "";
}

// GPUs from CUDA OS devices, else NVML OS devices, else NVIDIA PCI display / 3D controllers.
std::vector<Gpu> find_gpus_in(hwloc_topology_t t) {
  std::vector<Gpu> cuda, nvml, pci;
  for (hwloc_obj_t o = hwloc_get_next_osdev(t, nullptr); o; o = hwloc_get_next_osdev(t, o)) {
    const std::string name = o->name ? o->name : "";
    Gpu g;
    g.name = info(o, "GPUModel");
    g.pci_bus_id = pci_id(o);
    g.numa_node = locality(t, o);
    if (name.rfind("cuda", 0) == 0) {
      g.index = std::atoi(name.c_str() + 4);
      g.memory_bytes = std::atoll(info(o, "CUDAGlobalMemorySize")) * 1024;
      cuda.push_back(g);
    } else if (name.rfind("nvml", 0) == 0) {
      g.index = std::atoi(name.c_str() + 4);
      nvml.push_back(g);
    }
  }
  for (hwloc_obj_t o = hwloc_get_next_pcidev(t, nullptr); o; o = hwloc_get_next_pcidev(t, o)) {
    const auto& p = o->attr->pcidev;
    const unsigned cls = p.class_id;
    if (p.vendor_id != 0x10de || (cls != 0x0300 && cls != 0x0302)) continue;
    Gpu g;
    g.index = static_cast<int>(pci.size());
    g.name = fmt::format("PCI {:04x}:{:04x}", p.vendor_id, p.device_id);
    g.pci_bus_id = pci_id(o);
    g.numa_node = locality(t, o);
    pci.push_back(g);
  }
  std::vector<Gpu> out = !cuda.empty() ? cuda : !nvml.empty() ? nvml : pci;
  std::sort(out.begin(), out.end(), [](const Gpu& a, const Gpu& b) { return a.index < b.index; });
  return out;
}

}  // namespace

const NumaNode* Machine::node(int os_index) const {
  for (const NumaNode& n : numa)
    if (n.os_index == os_index) return &n;
  return nullptr;
}

int Machine::node_of_cpu(int cpu) const {
  for (const NumaNode& n : numa)
    if (std::binary_search(n.cpus.begin(), n.cpus.end(), cpu)) return n.os_index;
  return -1;
}

Result<Machine> discover(bool find_gpus) {
  EM_ASSIGN_OR_RETURN(TopologyPtr t, load_topology(find_gpus));
  Machine m;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) m.hostname = host;
  m.n_cores = hwloc_get_nbobjs_by_type(t.get(), HWLOC_OBJ_CORE);
  m.n_pus = hwloc_get_nbobjs_by_type(t.get(), HWLOC_OBJ_PU);
  const int n_nodes = hwloc_get_nbobjs_by_type(t.get(), HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < n_nodes; ++i) {
    hwloc_obj_t o = hwloc_get_obj_by_type(t.get(), HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    NumaNode n;
    n.os_index = static_cast<int>(o->os_index);
    n.memory_bytes = static_cast<int64_t>(o->attr->numanode.local_memory);
    if (o->cpuset) {
      n.cpus = bits(o->cpuset);
      n.cores = hwloc_get_nbobjs_inside_cpuset_by_type(t.get(), o->cpuset, HWLOC_OBJ_CORE);
    }
    m.memory_bytes += n.memory_bytes;
    m.numa.push_back(std::move(n));
  }
  if (m.numa.empty()) return Status::IoError("hwloc: no NUMA node found");
  std::sort(m.numa.begin(), m.numa.end(), [](const NumaNode& a, const NumaNode& b) { return a.os_index < b.os_index; });
  if (find_gpus) m.gpus = find_gpus_in(t.get());
  return m;
}

Result<std::vector<int>> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return Status::IoError(fmt::format("sched_getaffinity: {}", std::strerror(errno)));
  std::vector<int> out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

Result<std::vector<std::vector<int>>> allowed_cores() {
  EM_ASSIGN_OR_RETURN(std::vector<int> allowed, allowed_cpus());
  EM_ASSIGN_OR_RETURN(TopologyPtr t, load_topology(false));
  std::vector<std::vector<int>> cores;
  const int n = hwloc_get_nbobjs_by_type(t.get(), HWLOC_OBJ_CORE);
  for (int i = 0; i < n; ++i) {
    hwloc_obj_t o = hwloc_get_obj_by_type(t.get(), HWLOC_OBJ_CORE, static_cast<unsigned>(i));
    if (!o || !o->cpuset) continue;
    std::vector<int> pus;
    for (int c : bits(o->cpuset))
      if (std::binary_search(allowed.begin(), allowed.end(), c)) pus.push_back(c);
    if (!pus.empty()) cores.push_back(std::move(pus));
  }
  return cores;
}

int launched_node(const Machine& m, const std::vector<int>& allowed) {
  if (allowed.empty()) return -1;
  const int node = m.node_of_cpu(allowed.front());
  if (node < 0) return -1;
  for (int c : allowed)
    if (m.node_of_cpu(c) != node) return -1;
  size_t all = 0;
  for (const NumaNode& n : m.numa) all += n.cpus.size();
  return allowed.size() < all || m.numa.size() == 1 ? node : -1;
}

Status bind_to_node(const Machine& m, int os_index) {
  const NumaNode* n = m.node(os_index);
  if (!n) return Status::InvalidArgument(fmt::format("bind: NUMA node {} does not exist on {}", os_index, m.hostname));
  EM_ASSIGN_OR_RETURN(TopologyPtr t, load_topology(false));
  hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  for (int c : n->cpus) hwloc_bitmap_set(cpus, static_cast<unsigned>(c));
  hwloc_bitmap_set(nodes, static_cast<unsigned>(os_index));
  Status st;
  if (hwloc_set_cpubind(t.get(), cpus, HWLOC_CPUBIND_THREAD) != 0)
    st = Status::IoError(fmt::format("bind: cannot bind threads to NUMA node {}: {}", os_index, std::strerror(errno)));
  // Not STRICT: Linux MPOL_PREFERRED, so allocations past the node's memory fall back elsewhere.
  else if (hwloc_set_membind(t.get(), nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) != 0)
    st = Status::IoError(fmt::format("bind: cannot bind memory to NUMA node {}: {}", os_index, std::strerror(errno)));
  hwloc_bitmap_free(cpus);
  hwloc_bitmap_free(nodes);
  return st;
}

Result<int> bind_if_launched_bound(const Machine& m) {
  if (m.numa.size() < 2) return -1;
  EM_ASSIGN_OR_RETURN(std::vector<int> allowed, allowed_cpus());
  const int node = launched_node(m, allowed);
  if (node < 0) return -1;
  EM_ASSIGN_OR_RETURN(TopologyPtr t, load_topology(false));
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  hwloc_bitmap_set(nodes, static_cast<unsigned>(node));
  const int rc = hwloc_set_membind(t.get(), nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
  hwloc_bitmap_free(nodes);
  if (rc != 0)
    return Status::IoError(fmt::format("bind: cannot bind memory to NUMA node {}: {}", node, std::strerror(errno)));
  return node;
}

std::string describe(const Machine& m) {
  std::string s = fmt::format("host {}: {} NUMA node(s), {} cores, {} PUs, {:.1f} GiB\n", m.hostname, m.numa.size(),
                              m.n_cores, m.n_pus, static_cast<double>(m.memory_bytes) / (1 << 30));
  for (const NumaNode& n : m.numa)
    s += fmt::format("  numa {}: {:.1f} GiB, {} cores, cpus {}-{}\n", n.os_index,
                     static_cast<double>(n.memory_bytes) / (1 << 30), n.cores, n.cpus.empty() ? -1 : n.cpus.front(),
                     n.cpus.empty() ? -1 : n.cpus.back());
  for (const Gpu& g : m.gpus)
    s += fmt::format("  gpu {}: {} [{}] {:.1f} GiB, numa {}\n", g.index, g.name, g.pci_bus_id,
                     static_cast<double>(g.memory_bytes) / (1 << 30), g.numa_node);
  return s;
}

}  // namespace expertmesh::topology
