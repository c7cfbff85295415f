// Entry point of fnbus_bench. Benchmarks run in registration order, and
// Google Benchmark registers BENCHMARK() macros in static-initialisation
// order, which C++ leaves unspecified across files. So each file exposes a
// register_*() function and main() calls them in a fixed order: the
// handoff probe (BM_PingPong) runs once before and once after the
// cross-thread benchmarks, showing whether the host changed between its
// near and far vCPU states during the run (see TOOLCHAIN.md).

#include "support.hpp"
#include <benchmark/benchmark.h>

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fnbus_bench::register_trigger_benchmarks();
  fnbus_bench::register_stages_benchmarks();
  fnbus_bench::register_histogram_benchmarks();
  fnbus_bench::register_timer_benchmarks();
  fnbus_bench::register_mesh_benchmarks();
  fnbus_bench::register_idle_benchmarks();
  fnbus_bench::register_mesh_versions_benchmarks();
  fnbus_bench::register_pingpong_benchmark("BM_PingPong_Before");
  fnbus_bench::register_latency_benchmarks();
  fnbus_bench::register_call_benchmarks();
  fnbus_bench::register_throughput_benchmarks();
  fnbus_bench::register_scaling_benchmarks();
  fnbus_bench::register_pingpong_benchmark("BM_PingPong_After");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
