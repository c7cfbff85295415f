// fnbus::nats::Connection against a real nats-server on loopback (started
// and stopped by PID by NatsServer): connecting, the errors of a missing
// server, a comma-separated list of seeds, bad options and refused
// credentials, streams, and reconnecting after the server is killed and
// restarted.

#include "fnbus/nats/connection.hpp"

#include <string>

#include "../support/nats_server.hpp"
#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

namespace {

using fnbus::nats::Connection;
using fnbus::nats::ConnectOptions;
using fnbus::nats::StreamOptions;
using fnbus::testing_support::contains;
using fnbus::testing_support::free_loopback_port;
using fnbus::testing_support::NatsServer;
using fnbus::testing_support::wait_until;

std::string message_of(const absl::Status& status) {
  return std::string(status.message());
}

TEST_CASE("nats connection: connects, creates and finds a stream", "[nats]") {
  auto server = NatsServer::Start();
  auto nats = Connection::Connect({.url = server->url()});
  REQUIRE(nats.ok());
  CHECK((*nats)->connected());
  CHECK((*nats)->url() == server->url());
  const absl::Status missing = (*nats)->check_stream("ORDERS");
  CHECK(missing.code() == absl::StatusCode::kNotFound);
  CHECK(contains(message_of(missing), "ensure_stream"));
  REQUIRE((*nats)
              ->ensure_stream({.name = "ORDERS", .subjects = {"orders.>"}})
              .ok());
  CHECK((*nats)->check_stream("ORDERS").ok());
  // Again: an update of the same stream, not an error.
  CHECK((*nats)
            ->ensure_stream(
                {.name = "ORDERS", .subjects = {"orders.>", "payments.>"}})
            .ok());
}

TEST_CASE(
    "nats connection: a comma-separated URL list connects past a dead seed",
    "[nats]") {
  auto server = NatsServer::Start();
  const std::string dead =
      "nats://127.0.0.1:" + std::to_string(free_loopback_port());
  auto nats = Connection::Connect({.url = dead + " , " + server->url()});
  INFO(nats.status().ToString());
  REQUIRE(nats.ok());
  CHECK((*nats)->connected());
  CHECK((*nats)->ensure_stream({.name = "SEEDS", .subjects = {"seeds"}}).ok());
}

TEST_CASE("nats connection: no server at the URL is Unavailable, saying so",
          "[nats]") {
  const std::string url =
      "nats://127.0.0.1:" + std::to_string(free_loopback_port());
  auto nats = Connection::Connect(
      {.url = url, .connect_timeout = std::chrono::milliseconds(500)});
  REQUIRE_FALSE(nats.ok());
  CHECK(nats.status().code() == absl::StatusCode::kUnavailable);
  CHECK(contains(message_of(nats.status()), "no NATS server"));
  CHECK(contains(message_of(nats.status()), url));
}

TEST_CASE("nats connection: bad options are InvalidArgument", "[nats]") {
  auto empty = Connection::Connect({.url = ""});
  CHECK(empty.status().code() == absl::StatusCode::kInvalidArgument);
  auto two_ways = Connection::Connect(
      {.credentials = {.user = "a", .password = "b", .creds_file = "x.creds"}});
  CHECK(two_ways.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(message_of(two_ways.status()), "more than one way"));
  auto half_nkey = Connection::Connect({.credentials = {.nkey_public = "U"}});
  CHECK(half_nkey.status().code() == absl::StatusCode::kInvalidArgument);
  auto no_ca = Connection::Connect(
      {.tls = fnbus::nats::TlsOptions{.ca_file = "/nonexistent/ca.pem"}});
  CHECK(no_ca.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(message_of(no_ca.status()), "tls.ca_file"));
  StreamOptions no_subjects{.name = "S"};
  auto server = NatsServer::Start();
  auto nats = Connection::Connect({.url = server->url()});
  REQUIRE(nats.ok());
  CHECK((*nats)->ensure_stream(no_subjects).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK((*nats)
            ->ensure_stream({.name = "S", .subjects = {"s"}, .replicas = 0})
            .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE(
    "nats connection: a server that wants a password refuses a client "
    "without it",
    "[nats]") {
  auto server = NatsServer::Start(
      {.config = "authorization { user: shop, password: s3cret }"});
  auto anonymous = Connection::Connect({.url = server->url()});
  REQUIRE_FALSE(anonymous.ok());
  CHECK(anonymous.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(contains(message_of(anonymous.status()), "credentials"));
  auto wrong = Connection::Connect(
      {.url = server->url(),
       .credentials = {.user = "shop", .password = "guess"}});
  CHECK(wrong.status().code() == absl::StatusCode::kPermissionDenied);
  auto right = Connection::Connect(
      {.url = server->url(),
       .credentials = {.user = "shop", .password = "s3cret"}});
  REQUIRE(right.ok());
  CHECK((*right)->connected());
}

TEST_CASE("nats connection: reconnects after kill -9 and a restart", "[nats]") {
  auto server = NatsServer::Start();
  auto nats = Connection::Connect({.url = server->url()});
  REQUIRE(nats.ok());
  REQUIRE((*nats)
              ->ensure_stream({.name = "ORDERS", .subjects = {"orders.>"}})
              .ok());
  server->kill9();
  CHECK(wait_until([&] { return !(*nats)->connected(); }));
  server->restart();
  CHECK(wait_until([&] { return (*nats)->connected(); }));
  // The client's callbacks run on a thread of their own, after the status
  // changed.
  CHECK(wait_until([&] { return (*nats)->stats().reconnects >= 1; }));
  CHECK((*nats)->stats().disconnects >= 1);
  // The stream survived in the store.
  CHECK((*nats)->check_stream("ORDERS").ok());
}

}  // namespace
