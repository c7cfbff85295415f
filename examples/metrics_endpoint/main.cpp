// Serving fnbus metrics from an endpoint your backend already has.
//
// fnbus starts no HTTP server of its own: the backend owns its HTTP stack
// (Boost.Beast, Drogon, cpp-httplib, a gRPC gateway ...) and adds one route
// that returns fnbus::metrics::to_prometheus_text(bus.metrics()) with the
// Prometheus content type. `metrics_route` below is that route; the tiny
// socket server around it only stands in for your HTTP stack so that this
// example runs on its own: it serves one scrape on 127.0.0.1, scrapes itself
// like Prometheus would, and checks the answer.
//
// Point Prometheus at it with
//   scrape_configs:
//     - job_name: storefront
//       static_configs: [{targets: ["backend:8080"]}]

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "fmt/core.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fnbus/fnbus.hpp"

namespace {

struct OrderCreated {
  static constexpr std::string_view kEventName = "OrderCreated";
  std::uint64_t order_id;
  std::int64_t amount_cents;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

// The one piece you add to your backend: GET /metrics.
HttpResponse metrics_route(const fnbus::EventBus& bus) {
  return {200, "text/plain; version=0.0.4; charset=utf-8",
          fnbus::metrics::to_prometheus_text(bus.metrics())};
  // Or JSON, for a dashboard of your own:
  //   {200, "application/json", fnbus::metrics::to_json(bus.metrics())}
}

// --- Below: a stand-in for your HTTP stack and for Prometheus. ----------

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  [[nodiscard]] int fd() const { return fd_; }

 private:
  int fd_;
};

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

std::string receive_all(int fd) {
  std::string data;
  char buffer[4096];
  for (;;) {
    const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got <= 0) return data;
    data.append(buffer, static_cast<std::size_t>(got));
  }
}

// Answers one HTTP request on `listener`.
void serve_one(int listener, const fnbus::EventBus& bus) {
  Socket client(::accept(listener, nullptr, nullptr));
  if (client.fd() < 0) return;
  char request[1024];
  const ssize_t got = ::recv(client.fd(), request, sizeof request - 1, 0);
  const std::string_view line(request,
                              got > 0 ? static_cast<std::size_t>(got) : 0);
  HttpResponse response = line.starts_with("GET /metrics ")
                              ? metrics_route(bus)
                              : HttpResponse{404, "text/plain", "not found\n"};
  send_all(
      client.fd(),
      fmt::format("HTTP/1.0 {} {}\r\nContent-Type: {}\r\n"
                  "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                  response.status, response.status == 200 ? "OK" : "Not Found",
                  response.content_type, response.body.size(), response.body));
}

std::string scrape(std::uint16_t port) {
  Socket connection(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(connection.fd(), reinterpret_cast<sockaddr*>(&address),
                sizeof address) != 0) {
    return "";
  }
  send_all(connection.fd(), "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
  return receive_all(connection.fd());
}

}  // namespace

int main() {
  auto bus_or = fnbus::EventBus::Create({.workers = 2});
  if (!bus_or.ok()) {
    fmt::print(stderr, "cannot start the bus: {}\n",
               bus_or.status().ToString());
    return 1;
  }
  fnbus::EventBus& bus = **bus_or;
  fnbus::Subscription subscription = bus.subscribe<OrderCreated>(
      [](const OrderCreated&) {}, {.name = "reserve_inventory"});
  for (std::uint64_t id = 1; id <= 100; ++id) {
    (void)bus.publish(OrderCreated{id, 2'599});
  }
  (void)bus.shutdown();  // drain, so that the numbers below are final

  // Listen on an ephemeral loopback port, as your HTTP stack would on 8080.
  Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener.fd(), reinterpret_cast<sockaddr*>(&address),
             sizeof address) != 0 ||
      ::listen(listener.fd(), 1) != 0 ||
      ::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&address),
                    &length) != 0) {
    fmt::print(stderr, "cannot listen on 127.0.0.1\n");
    return 1;
  }
  std::thread server(serve_one, listener.fd(), std::cref(bus));
  const std::string reply = scrape(ntohs(address.sin_port));
  server.join();

  fmt::print("{}", reply);
  const bool ok =
      reply.starts_with("HTTP/1.0 200 OK") &&
      reply.find("Content-Type: text/plain; version=0.0.4") !=
          std::string::npos &&
      reply.find("fnbus_events_published_total{event=\"OrderCreated\"} 100") !=
          std::string::npos;
  fmt::print("{}\n", ok ? "metrics_endpoint: scrape ok"
                        : "metrics_endpoint: SCRAPE FAILED");
  return ok ? 0 : 1;
}
