// Prints the Prometheus text (or, with --json, the JSON) of a hand-built
// MetricsSnapshot with awkward names, for the ctests metrics.promtool
// (piped into `promtool check metrics`) and metrics.json (piped into
// `python3 -m json.tool`).

#include <cstdio>
#include <string>
#include <string_view>

#include "sample_snapshot.hpp"

#include "fnbus/metrics/exposition.hpp"

int main(int argc, char** argv) {
  const bool json = argc > 1 && std::string_view(argv[1]) == "--json";
  if (argc > 2 || (argc == 2 && !json)) {
    std::fprintf(stderr, "usage: %s [--json]\n", argv[0]);
    return 2;
  }
  const fnbus::metrics::MetricsSnapshot snapshot =
      fnbus::testing_support::sample_snapshot();
  const std::string text = json ? fnbus::metrics::to_json(snapshot)
                                : fnbus::metrics::to_prometheus_text(snapshot);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}
