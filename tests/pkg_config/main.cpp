// Consumer of an installed fnbus built with pkg-config only (see
// check.cmake): publishes events through a bus and checks that its handler
// ran for each of them. Exits non-zero on any problem. Does not compile
// unless fnbus/version.hpp has the version check.cmake expects
// (EXPECTED_VERSION_*, passed with -D).

#include <atomic>
#include <cstdio>
#include <string_view>
#include <utility>

#include "fnbus/fnbus.hpp"

#define CONSUMER_STR(x) #x
#define CONSUMER_XSTR(x) CONSUMER_STR(x)
static_assert(FNBUS_VERSION_MAJOR == EXPECTED_VERSION_MAJOR);
static_assert(FNBUS_VERSION_MINOR == EXPECTED_VERSION_MINOR);
static_assert(FNBUS_VERSION_PATCH == EXPECTED_VERSION_PATCH);
static_assert(FNBUS_VERSION == EXPECTED_VERSION_MAJOR * 10000 +
                                   EXPECTED_VERSION_MINOR * 100 +
                                   EXPECTED_VERSION_PATCH);
static_assert(
    std::string_view(FNBUS_VERSION_STRING) ==
    CONSUMER_XSTR(EXPECTED_VERSION_MAJOR) "." CONSUMER_XSTR(
        EXPECTED_VERSION_MINOR) "." CONSUMER_XSTR(EXPECTED_VERSION_PATCH));
#if FNBUS_VERSION != EXPECTED_VERSION_MAJOR * 10000 + \
                         EXPECTED_VERSION_MINOR * 100 + EXPECTED_VERSION_PATCH
#error "FNBUS_VERSION (in #if) is not the expected version"
#endif

namespace {

struct OrderCreated {
  int amount = 0;
};

}  // namespace

int main() {
  constexpr int kPublished = 10;
  std::atomic<int> total{0};
  std::atomic<int> errors{0};
  fnbus::BusConfig config;
  config.workers = 1;
  config.error_sink = [&errors](const fnbus::HandlerError&) { ++errors; };
  config.dead_letter_sink = [&errors](const fnbus::DeadLetter&) { ++errors; };
  auto bus = fnbus::EventBus::Create(std::move(config));
  if (!bus.ok()) {
    std::fprintf(stderr, "Create: %s\n", bus.status().ToString().c_str());
    return 1;
  }
  fnbus::Subscription subscription = (*bus)->subscribe<OrderCreated>(
      [&total](const OrderCreated& order) { total += order.amount; });
  for (int i = 1; i <= kPublished; ++i) {
    if (absl::Status status = (*bus)->publish(OrderCreated{.amount = i});
        !status.ok()) {
      std::fprintf(stderr, "publish: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  if (absl::Status status = (*bus)->shutdown(fnbus::ShutdownMode::kDrain);
      !status.ok()) {
    std::fprintf(stderr, "shutdown: %s\n", status.ToString().c_str());
    return 1;
  }
  constexpr int kExpected = kPublished * (kPublished + 1) / 2;
  if (total.load() != kExpected || errors.load() != 0 ||
      (*bus)->stats().delivered != kPublished) {
    std::fprintf(stderr, "consumer: handled total %d (want %d), %d errors\n",
                 total.load(), kExpected, errors.load());
    return 1;
  }
  std::printf(
      "consumer: %d events handled through fnbus %s found by pkg-config\n",
      kPublished, FNBUS_VERSION_STRING);
  return 0;
}
