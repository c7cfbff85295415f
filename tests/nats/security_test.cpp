// fnbus::nats::Connection against nats-servers that require TLS, an NKey
// or a creds file (ConnectOptions::tls, Credentials::nkey_* and
// creds_file): the right client connects and round-trips a message, the
// others are refused with a status that says what to set. The TLS certificates
// (a CA, a server certificate for 127.0.0.1 and localhost) are made at run time
// with the `openssl` CLI; without it the TLS test is reported SKIPPED (ctest
// shows it skipped). The NKey pairs, the operator's configuration and the creds
// files are fixed test data in tests/nats/testdata/ (made by its
// gen_nkey.py and gen_creds.py), never used anywhere else.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "../support/nats_server.hpp"
#include "../support/test_support.hpp"
#include "src/nats/handles.hpp"
#include <catch2/catch.hpp>

#include "fnbus/nats/connection.hpp"

namespace {

using fnbus::nats::Connection;
using fnbus::nats::TlsOptions;
using fnbus::testing_support::contains;
using fnbus::testing_support::make_temp_dir;
using fnbus::testing_support::NatsServer;

// A message published on `connection` comes back to its own subscription.
void check_round_trip(Connection& connection) {
  natsConnection* nc = connection.handles().connection;
  natsSubscription* sub = nullptr;
  REQUIRE(natsConnection_SubscribeSync(&sub, nc, "security.echo") == NATS_OK);
  REQUIRE(natsConnection_PublishString(nc, "security.echo", "hello") ==
          NATS_OK);
  natsMsg* msg = nullptr;
  REQUIRE(natsSubscription_NextMsg(&msg, sub, 10000) == NATS_OK);
  CHECK(std::string(natsMsg_GetData(msg),
                    static_cast<std::size_t>(natsMsg_GetDataLength(msg))) ==
        "hello");
  natsMsg_Destroy(msg);
  natsSubscription_Destroy(sub);
}

// A temporary directory holding ca.pem (a CA) and server.pem/server.key
// (signed by it, for IP 127.0.0.1 and DNS localhost), removed at the end.
struct TestCertificates {
  std::string dir = make_temp_dir();
  bool made = false;

  TestCertificates() {
    const std::string quiet = " >>'" + dir + "/openssl.log' 2>&1";
    const std::string commands =
        "cd '" + dir + "' && " +
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key "
        "-out ca.pem -subj '/CN=fnbus test CA'" +
        quiet +
        " && openssl req -newkey rsa:2048 -nodes -keyout server.key "
        "-out server.csr -subj '/CN=localhost'" +
        quiet +
        " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > "
        "san.cnf && openssl x509 -req -in server.csr -CA ca.pem -CAkey "
        "ca.key -CAcreateserial -days 1 -extfile san.cnf -out server.pem" +
        quiet;
    made = std::system(commands.c_str()) == 0;
  }
  ~TestCertificates() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  [[nodiscard]] std::string path(const char* name) const {
    return dir + "/" + name;
  }
};

bool have_openssl() {
  return std::system("which openssl >/dev/null 2>&1") == 0;
}

TEST_CASE(
    "nats security: a server requiring TLS takes a client with the CA and "
    "refuses one without TLS",
    "[nats][security]") {
  if (!have_openssl()) {
    WARN(
        "SKIPPED: `openssl` is not on PATH, so the TLS test cannot make its "
        "certificates; install it (apt-get install openssl)");
    return;
  }
  TestCertificates certificates;
  INFO("openssl's log is in " << certificates.dir);
  REQUIRE(certificates.made);
  auto server = NatsServer::Start(
      {.config = "tls {\n  cert_file: \"" + certificates.path("server.pem") +
                 "\"\n  key_file: \"" + certificates.path("server.key") +
                 "\"\n  timeout: 5\n}"});
  const std::string tls_url =
      "tls://127.0.0.1:" + std::to_string(server->port());

  auto secure = Connection::Connect(
      {.url = tls_url,
       .tls = TlsOptions{.ca_file = certificates.path("ca.pem")}});
  INFO(secure.status().ToString());
  REQUIRE(secure.ok());
  CHECK((*secure)->connected());
  check_round_trip(**secure);
  CHECK((*secure)
            ->ensure_stream({.name = "SECURE", .subjects = {"secure.>"}})
            .ok());

  auto plain = Connection::Connect({.url = server->url()});
  REQUIRE_FALSE(plain.ok());
  CHECK(plain.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(contains(plain.status().ToString(), "ConnectOptions::tls"));

  // TLS, but trusting only the system's CAs: the test CA is not one.
  auto untrusted = Connection::Connect({.url = tls_url, .tls = TlsOptions{}});
  REQUIRE_FALSE(untrusted.ok());
  CHECK(untrusted.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(contains(untrusted.status().ToString(), "TLS failed"));
}

std::string testdata(const char* name) {
  return std::string(FNBUS_NATS_TESTDATA) + "/" + name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  REQUIRE_FALSE(text.str().empty());
  return text.str();
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  REQUIRE_FALSE(line.empty());
  return line;
}

TEST_CASE(
    "nats security: a server with an NKey user refuses missing and wrong "
    "keys",
    "[nats][security]") {
  const std::string user = read_line(testdata("shop_user.pub"));
  auto server = NatsServer::Start(
      {.config = "authorization { users = [ { nkey: " + user + " } ] }"});

  auto right = Connection::Connect(
      {.url = server->url(),
       .credentials = {.nkey_public = user,
                       .nkey_seed_file = testdata("shop_user.nk")}});
  INFO(right.status().ToString());
  REQUIRE(right.ok());
  check_round_trip(**right);

  auto missing = Connection::Connect({.url = server->url()});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(contains(missing.status().ToString(), "ConnectOptions::credentials"));

  // A valid key pair the server does not know.
  auto stranger = Connection::Connect(
      {.url = server->url(),
       .credentials = {.nkey_public = read_line(testdata("stranger.pub")),
                       .nkey_seed_file = testdata("stranger.nk")}});
  REQUIRE_FALSE(stranger.ok());
  CHECK(stranger.status().code() == absl::StatusCode::kPermissionDenied);

  // The right public key signed with another seed.
  auto forged = Connection::Connect(
      {.url = server->url(),
       .credentials = {.nkey_public = user,
                       .nkey_seed_file = testdata("stranger.nk")}});
  REQUIRE_FALSE(forged.ok());
  CHECK(forged.status().code() == absl::StatusCode::kPermissionDenied);
}

TEST_CASE(
    "nats security: a server trusting an operator takes its user's creds "
    "file and refuses others",
    "[nats][security]") {
  auto server =
      NatsServer::Start({.config = read_file(testdata("operator.conf"))});

  auto right = Connection::Connect(
      {.url = server->url(),
       .credentials = {.creds_file = testdata("shop.creds")}});
  INFO(right.status().ToString() << "\n" << server->log());
  REQUIRE(right.ok());
  check_round_trip(**right);

  auto missing = Connection::Connect({.url = server->url()});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kPermissionDenied);

  // A user of an account (and operator) the server does not know.
  auto stranger = Connection::Connect(
      {.url = server->url(),
       .credentials = {.creds_file = testdata("stranger.creds")}});
  REQUIRE_FALSE(stranger.ok());
  CHECK(stranger.status().code() == absl::StatusCode::kPermissionDenied);
}

}  // namespace
