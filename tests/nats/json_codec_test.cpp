// The two_services example's JSON codec (examples/two_services/
// json_codec.hpp): round trips, and every malformed input refused with a
// Status that says where and why. scripts/fuzz.sh fuzzes it further.

#include "../../examples/two_services/json_codec.hpp"

#include <string>

#include "../../examples/two_services/events.hpp"
#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

namespace {

using fnbus::testing_support::contains;
using two_services::order_placed_json;
using two_services::OrderPlaced;

TEST_CASE("json codec: an event round-trips, fields in any order",
          "[nats][json_codec]") {
  const OrderPlaced order{
      .order_id = 42, .user_id = -7, .amount_cents = 1999, .items = 2};
  const std::string text = order_placed_json().encode(order);
  CHECK(text ==
        R"({"order_id":42,"user_id":-7,"amount_cents":1999,"items":2})");
  auto back = order_placed_json().decode(text);
  REQUIRE(back.ok());
  CHECK(back->order_id == 42);
  CHECK(back->user_id == -7);
  auto reordered =
      order_placed_json().decode(" {\n \"items\" : 3 , \"order_id\":5 }\n");
  REQUIRE(reordered.ok());
  CHECK(reordered->items == 3);
  CHECK(reordered->order_id == 5);
  CHECK(reordered->amount_cents == 0);  // left out: the default
  CHECK(order_placed_json().decode("{}").ok());
}

TEST_CASE("json codec: malformed bytes are refused, saying why",
          "[nats][json_codec]") {
  const struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "expected '{'"},
      {"[1]", "expected '{'"},
      {"{\"order_id\":1", "expected ',' or '}'"},
      {"{\"order_id\":}", "expected an integer"},
      {"{\"order_id\":1.5}", "expected ',' or '}'"},
      {"{\"order_id\":99999999999999999999}", "expected an integer"},
      {"{\"order_id\" 1}", "expected ':'"},
      {"{\"coupon\":1}", "unknown field \"coupon\""},
      {"{\"order_id\":1,\"order_id\":2}", "field \"order_id\" twice"},
      {"{\"order\\u005fid\":1}", "expected a field name"},
      {"{\"order_id\":1} x", "trailing bytes"},
      {"{\"order_id", "expected a field name"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto decoded = order_placed_json().decode(c.text);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(contains(std::string(decoded.status().message()), c.why));
  }
}

}  // namespace
