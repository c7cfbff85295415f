// Storefront: a small shop on fnbus, in five parts (see parts.hpp):
//
//   storefront                       runs the tour, the flash sale, the
//                                    outbox, payments and the mesh, one
//                                    after another
//   storefront tour|flash-sale|outbox|payments|mesh   runs the parts named
//   storefront --metrics-out FILE    writes the tour's Prometheus text to
//                                    FILE instead of printing it (CI checks
//                                    it with promtool)
//
// Each part checks its counters; the program exits with 1 if a check
// failed (2 for a bad command line), else 0.

#include <string>
#include <string_view>

#include "fmt/core.h"
#include "parts.hpp"

int main(int argc, char** argv) {
  std::string metrics_out;
  bool tour = false;
  bool flash_sale = false;
  bool outbox = false;
  bool payments = false;
  bool mesh = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--metrics-out" && i + 1 < argc) {
      metrics_out = argv[++i];
    } else if (arg == "tour") {
      tour = true;
    } else if (arg == "flash-sale") {
      flash_sale = true;
    } else if (arg == "outbox") {
      outbox = true;
    } else if (arg == "payments") {
      payments = true;
    } else if (arg == "mesh") {
      mesh = true;
    } else {
      fmt::print(stderr,
                 "usage: {} [tour] [flash-sale] [outbox] [payments] [mesh] "
                 "[--metrics-out FILE]\n",
                 argv[0]);
      return 2;
    }
  }
  if (!tour && !flash_sale && !outbox && !payments && !mesh) {
    tour = flash_sale = outbox = payments = mesh = true;
  }

  bool ok = true;
  if (tour) ok &= shop::run_tour(metrics_out);
  if (flash_sale) ok &= shop::run_flash_sale();
  if (outbox) ok &= shop::run_outbox();
  if (payments) ok &= shop::run_payments();
  if (mesh) ok &= shop::run_mesh();
  fmt::print("{}\n", ok ? "storefront: all checks passed"
                        : "storefront: CHECKS FAILED");
  return ok ? 0 : 1;
}
