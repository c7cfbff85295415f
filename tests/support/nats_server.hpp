// A real nats-server for the bridge's tests and benchmarks: started on
// loopback on a free port with JetStream and a temporary store directory,
// stopped by PID (SIGTERM, or SIGKILL for crash tests), restartable on the
// same port and store. Never a mock: the tests talk to the server Debian
// ships. No Catch2 here (the benchmarks use it too): a failure to start
// throws std::runtime_error, which fails the test case that called.
#pragma once

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace fnbus::testing_support {

// Throws std::runtime_error("nats_server: <what>") unless `ok`.
inline void server_check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("nats_server: " + what);
}

// A port on 127.0.0.1 that nobody listened on a moment ago.
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  server_check(fd >= 0, "socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  server_check(
      ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0,
      "bind() to a free loopback port failed");
  socklen_t length = sizeof address;
  server_check(
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0,
      "getsockname() failed");
  ::close(fd);
  return ntohs(address.sin_port);
}

// Whether something accepts TCP connections on 127.0.0.1:`port`.
inline bool accepts_connections(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok =
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

// A new directory under the system's temporary directory (for a server's
// store and configuration, a test's certificates).
inline std::string make_temp_dir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "fnbus-nats-XXXXXX").string();
  server_check(::mkdtemp(pattern.data()) != nullptr,
               "cannot create a temporary directory");
  return pattern;
}

class NatsServer {
 public:
  struct Options {
    // Extra lines of a server configuration file (authorization, tls...).
    std::string config;
    // A store directory to reuse (a restart after kill -9); empty: a new
    // temporary one, removed with the server.
    std::string store_dir;
    // The client port; 0 (left out): a free one. No default member
    // initialiser: `Options options = {}` needs none before the class ends.
    int port;
  };

  // Starts the server and waits (bounded) until it accepts connections.
  static std::unique_ptr<NatsServer> Start(Options options = {}) {
    auto server =
        std::unique_ptr<NatsServer>(new NatsServer(std::move(options)));
    server->launch();
    return server;
  }

  ~NatsServer() {
    stop(SIGTERM);
    if (owns_dir_) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string url() const {
    return "nats://127.0.0.1:" + std::to_string(port_);
  }
  [[nodiscard]] const std::string& store_dir() const { return store_; }
  // The server's log so far (for failure messages).
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ + "/server.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // A crash: SIGKILL, then reaped. The store is kept for restart().
  void kill9() { stop(SIGKILL); }
  // Starts it again on the same port and store (after kill9()).
  void restart() {
    stop(SIGTERM);
    launch();
  }

 private:
  explicit NatsServer(Options options) : options_(std::move(options)) {
    dir_ = make_temp_dir();
    owns_dir_ = true;
    store_ = options_.store_dir.empty() ? dir_ + "/store" : options_.store_dir;
    port_ = options_.port > 0 ? options_.port : free_loopback_port();
  }

  void launch() {
    const std::string config_path = dir_ + "/server.conf";
    {
      std::ofstream config(config_path);
      config << "listen: 127.0.0.1:" << port_ << "\n"
             << "jetstream { store_dir: \"" << store_ << "\" }\n"
             << options_.config << "\n";
    }
    std::vector<std::string> args = {"nats-server", "-c", config_path};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log_path = dir_ + "/server.log";
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int spawned = ::posix_spawnp(&pid_, "nats-server", &actions, nullptr,
                                       argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    server_check(spawned == 0,
                 "cannot start nats-server; is it on PATH? (apt-get install "
                 "nats-server)");
    const bool up =
        wait_until([&] { return accepts_connections(port_) || exited(); });
    server_check(up && !exited(),
                 "nats-server did not start; its log:\n" + log());
  }

  // Whether the child exited already (reaps it if so).
  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  void stop(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  Options options_;
  std::string dir_;
  bool owns_dir_ = false;
  std::string store_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// A JetStream cluster of three nats-servers on loopback: each with its
// own free client port, cluster port, store and server_name ("n0".."n2"),
// one cluster name, routes to the other two; each stopped by PID (its
// NatsServer). Start() returns once every server accepts clients; JetStream
// elects its meta leader after that: wait for it with a replicated
// ensure_stream (see the cluster test), bounded.
class NatsCluster {
 public:
  static constexpr int kSize = 3;

  static std::unique_ptr<NatsCluster> Start() {
    auto cluster = std::unique_ptr<NatsCluster>(new NatsCluster());
    std::vector<int> client_ports;
    std::vector<int> route_ports;
    for (int i = 0; i < kSize; ++i) {
      client_ports.push_back(free_loopback_port());
      route_ports.push_back(free_loopback_port());
    }
    for (int i = 0; i < kSize; ++i) {
      std::string routes;
      for (int j = 0; j < kSize; ++j) {
        if (j == i) continue;
        routes += (routes.empty() ? "" : ", ") +
                  std::string("nats-route://127.0.0.1:") +
                  std::to_string(route_ports[j]);
      }
      cluster->servers_.push_back(NatsServer::Start(
          {.config = "server_name: n" + std::to_string(i) +
                     "\ncluster {\n  name: fnbus\n  listen: 127.0.0.1:" +
                     std::to_string(route_ports[i]) + "\n  routes: [" + routes +
                     " ]\n}",
           .port = client_ports[i]}));
    }
    return cluster;
  }

  NatsServer& server(int i) { return *servers_.at(static_cast<size_t>(i)); }
  // Every server's URL, comma-separated (the client's seeds).
  [[nodiscard]] std::string urls() const {
    std::string out;
    for (const auto& server : servers_) {
      out += (out.empty() ? "" : ",") + server->url();
    }
    return out;
  }
  // Every server's log, for failure messages.
  [[nodiscard]] std::string logs() const {
    std::string out;
    for (const auto& server : servers_) out += server->log() + "\n----\n";
    return out;
  }

 private:
  NatsCluster() = default;
  std::vector<std::unique_ptr<NatsServer>> servers_;
};

}  // namespace fnbus::testing_support
