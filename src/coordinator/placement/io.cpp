// Placement flags, -ot parsing, and textproto / JSON reading and printing.
#include <fmt/format.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <fstream>
#include <regex>
#include <sstream>

#include "cli/flags.h"
#include "coordinator/placement/planner.h"

namespace expertmesh::placement {

void add_placement_flags(cli::FlagSet& fs, PlacementFlags* flags) {
  fs.add_string({"--placement"}, &flags->placement, "ep|pp|hybrid|FILE",
                "how layers, heads and experts are spread over the ranks: ep (experts and heads split over every rank; "
                "default), pp (pipeline of contiguous layers), hybrid (pipeline across hosts, ep inside a host), or a "
                "Placement textproto (configs/*.textproto; missing fields are filled in)");
  fs.add_list({"-ot", "--override-tensor"}, &flags->overrides, "REGEX=DEV[,...]",
              "place tensors whose name matches REGEX on DEV: CPU, GPU, GPU<n>, CUDA<n>, or rank<N> (that rank alone "
              "owns the layer unit); first match wins; repeatable");
  fs.add_string({"--cluster"}, &flags->cluster, "FILE",
                "ClusterConfig textproto: hosts, which rank lives where, their memory and policy (default: ranks "
                "grouped by hostname, resources from hwloc)");
}

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Parses a non-negative decimal integer filling all of `s`; -1 otherwise.
int parse_index(const std::string& s) {
  if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(s);
}

Result<proto::TensorOverride> parse_one(const std::string& item) {
  const size_t eq = item.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
    return Status::InvalidArgument(fmt::format("-ot: '{}' is not REGEX=DEVICE", item));
  proto::TensorOverride o;
  o.set_pattern(item.substr(0, eq));
  const std::string dev = item.substr(eq + 1), ldev = lower(dev);
  if (ldev == "cpu") {
    o.mutable_device()->set_kind(proto::DEVICE_KIND_CPU);
  } else if (ldev == "gpu") {
    o.mutable_device()->set_kind(proto::DEVICE_KIND_GPU);
    o.mutable_device()->set_index(-1);
  } else if ((ldev.rfind("gpu", 0) == 0 && parse_index(ldev.substr(3)) >= 0) ||
             (ldev.rfind("cuda", 0) == 0 && parse_index(ldev.substr(4)) >= 0)) {
    o.mutable_device()->set_kind(proto::DEVICE_KIND_GPU);
    o.mutable_device()->set_index(parse_index(ldev.substr(ldev[0] == 'g' ? 3 : 4)));
  } else if (ldev.rfind("rank", 0) == 0 && parse_index(ldev.substr(4)) >= 0) {
    o.set_rank(parse_index(ldev.substr(4)));
  } else {
    return Status::InvalidArgument(
        fmt::format("-ot {}: unknown device '{}' (CPU, GPU, GPU<n>, CUDA<n> or rank<N>)", item, dev));
  }
  try {
    std::regex check(o.pattern(), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return Status::InvalidArgument(fmt::format("-ot {}: '{}' is not a valid regex: {}", item, o.pattern(), e.what()));
  }
  return o;
}

class LineErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (first.empty()) first = fmt::format("line {}:{}: {}", line + 1, column + 1, message);
  }
  std::string first;
};

Status parse_textproto(const std::string& path, google::protobuf::Message* msg) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  google::protobuf::TextFormat::Parser parser;
  LineErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(ss.str(), msg))
    return Status::InvalidArgument(fmt::format("{}: {} ({})", path, errors.first, msg->GetTypeName()));
  return Status::Ok();
}

}  // namespace

Result<std::vector<proto::TensorOverride>> parse_tensor_overrides(const std::vector<std::string>& values) {
  std::vector<proto::TensorOverride> out;
  for (const std::string& v : values) {
    size_t at = 0;
    while (at <= v.size()) {
      const size_t comma = std::min(v.find(',', at), v.size());
      EM_ASSIGN_OR_RETURN(proto::TensorOverride o, parse_one(v.substr(at, comma - at)));
      out.push_back(std::move(o));
      at = comma + 1;
    }
  }
  return out;
}

Result<proto::ClusterConfig> load_cluster_config(const std::string& path) {
  proto::ClusterConfig c;
  EM_RETURN_IF_ERROR(parse_textproto(path, &c));
  if (c.hosts_size() == 0) return Status::InvalidArgument(fmt::format("{}: no hosts", path));
  std::vector<int> seen;
  for (const proto::Host& h : c.hosts()) {
    if (h.ranks_size() == 0) return Status::InvalidArgument(fmt::format("{}: host '{}' has no ranks", path, h.name()));
    for (const proto::RankSpec& r : h.ranks()) seen.push_back(r.rank());
  }
  std::sort(seen.begin(), seen.end());
  for (size_t i = 0; i < seen.size(); ++i)
    if (seen[i] != static_cast<int>(i))
      return Status::InvalidArgument(fmt::format(
          "{}: the hosts' ranks must be 0..{} each once (rank {} is missing or repeated)", path, seen.size() - 1, i));
  return c;
}

Result<proto::Placement> load_placement_file(const std::string& path) {
  proto::Placement p;
  EM_RETURN_IF_ERROR(parse_textproto(path, &p));
  return p;
}

std::string to_textproto(const proto::Placement& p) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(p, &out);
  return out;
}

std::string to_json(const proto::Placement& p) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opt;
  opt.add_whitespace = true;
  opt.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(p, &out, opt);
  return out;
}

}  // namespace expertmesh::placement
