#include "fnbus/mesh/versioned_handler.hpp"

#include <cstdio>

#include "fnbus/detail/exception_message.hpp"

namespace fnbus::detail {

std::uint64_t versioned_draw(std::uint64_t counter) noexcept {
  std::uint64_t z = counter * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

absl::Status key_extractor_threw() {
  return absl::InternalError(
      "VersionedHandler: the key extractor threw (" +
      current_exception_message() +
      "); no version ran the event. Make Options::key return a key for "
      "every event (e.g. an empty one) instead of throwing");
}

}  // namespace fnbus::detail

namespace fnbus::mesh {

namespace {

// `"value"`, with `\`, `"` and newline escaped (Prometheus label syntax).
void append_quoted(std::string& out, std::string_view value) {
  out += '"';
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
}

void append_sample(std::string& out, std::string_view name,
                   std::string_view function, std::string_view labels,
                   std::string_view value) {
  out += name;
  out += "{function=";
  append_quoted(out, function);
  out += labels;
  out += "} ";
  out += value;
  out += '\n';
}

}  // namespace

std::string prometheus_text(std::string_view function,
                            const VersionedFunction::Stats& stats) {
  std::string out;
  const auto per_version = [&](std::string_view name, std::string_view help,
                               auto field) {
    out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
    out += "# TYPE " + std::string(name) + " counter\n";
    for (const VersionedFunction::VersionStats& v : stats.versions) {
      std::string labels = ",version=";
      append_quoted(labels, v.label);
      labels += ",version_id=\"" + std::to_string(v.id) + "\"";
      append_sample(out, name, function, labels, std::to_string(field(v)));
    }
  };
  per_version("fnbus_version_calls_total",
              "Calls of a versioned function, by version.",
              [](const VersionedFunction::VersionStats& v) { return v.calls; });
  per_version(
      "fnbus_version_failures_total",
      "Failed calls of a versioned function, by version.",
      [](const VersionedFunction::VersionStats& v) { return v.failures; });
  out +=
      "# HELP fnbus_version_changes_total Changes of a versioned function's "
      "split, by kind.\n"
      "# TYPE fnbus_version_changes_total counter\n";
  const std::pair<std::string_view, std::uint64_t> changes[] = {
      {"deploy", stats.deploys},
      {"promote", stats.promotions},
      {"rollback", stats.rollbacks},
      {"automatic_rollback", stats.automatic_rollbacks}};
  for (const auto& [kind, count] : changes) {
    append_sample(out, "fnbus_version_changes_total", function,
                  ",kind=\"" + std::string(kind) + "\"", std::to_string(count));
  }
  out +=
      "# HELP fnbus_version_canary_weight The live canary's share of calls "
      "(0 without one).\n"
      "# TYPE fnbus_version_canary_weight gauge\n";
  char weight[32];
  std::snprintf(weight, sizeof weight, "%.17g", stats.table.weight());
  append_sample(out, "fnbus_version_canary_weight", function, "", weight);
  return out;
}

}  // namespace fnbus::mesh
