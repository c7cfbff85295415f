#pragma once

// A small JSON codec for flat events whose fields are integers, e.g.
//   {"order_id":42,"user_id":7,"amount_cents":1999,"items":2}
// as fnbus::nats::Codec<E> wants it. Decoding reads bytes from the
// network: it accepts exactly one flat object of known integer fields
// (each at most once, in any order, whitespace allowed) and refuses
// anything else with a Status saying what was wrong; every read is
// bounds-checked.
// Fields the object leaves out keep their defaults; unknown ones are
// refused (a newer sender's event is not silently cut).

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "fmt/format.h"

#include "fnbus/nats/codec.hpp"

namespace two_services {

template <typename E>
class JsonCodec {
 public:
  struct Field {
    std::string_view name;
    std::int64_t E::*member;
  };

  JsonCodec(std::initializer_list<Field> fields) : fields_(fields) {}

  [[nodiscard]] std::string encode(const E& event) const {
    std::string out = "{";
    for (const Field& field : fields_) {
      if (out.size() > 1) out += ',';
      out += fmt::format("\"{}\":{}", field.name, event.*field.member);
    }
    out += '}';
    return out;
  }

  [[nodiscard]] absl::StatusOr<E> decode(std::string_view text) const {
    Reader in{text};
    E event{};
    std::vector<bool> seen(fields_.size(), false);
    if (!in.consume('{')) return in.error("expected '{'");
    if (in.consume('}')) return in.finish(event);
    do {
      std::string_view name;
      if (!in.string(name)) return in.error("expected a field name");
      if (!in.consume(':')) return in.error("expected ':'");
      std::int64_t value = 0;
      if (!in.integer(value)) return in.error("expected an integer");
      const std::size_t index = find(name);
      if (index == fields_.size()) {
        return in.error(fmt::format("unknown field \"{}\"", name));
      }
      if (seen[index]) {
        return in.error(fmt::format("field \"{}\" twice", name));
      }
      seen[index] = true;
      event.*fields_[index].member = value;
    } while (in.consume(','));
    if (!in.consume('}')) return in.error("expected ',' or '}'");
    return in.finish(event);
  }

  // The codec in the form the bridge takes.
  [[nodiscard]] fnbus::nats::Codec<E> codec() const {
    return {.encode = [this](const E& e) -> absl::StatusOr<std::string> {
              return encode(e);
            },
            .decode = [this](std::string_view bytes) { return decode(bytes); }};
  }

 private:
  // A cursor over the input; every read checks the bounds.
  struct Reader {
    std::string_view text;
    std::size_t at = 0;

    void skip_space() {
      while (at < text.size() && (text[at] == ' ' || text[at] == '\t' ||
                                  text[at] == '\n' || text[at] == '\r')) {
        ++at;
      }
    }
    bool consume(char c) {
      skip_space();
      if (at < text.size() && text[at] == c) {
        ++at;
        return true;
      }
      return false;
    }
    // A name without escapes (ours never need them).
    bool string(std::string_view& out) {
      if (!consume('"')) return false;
      const std::size_t end = text.find('"', at);
      if (end == std::string_view::npos) return false;
      out = text.substr(at, end - at);
      if (out.find('\\') != std::string_view::npos) return false;
      at = end + 1;
      return true;
    }
    bool integer(std::int64_t& out) {
      skip_space();
      const char* first = text.data() + at;
      const char* last = text.data() + text.size();
      const auto [end, error] = std::from_chars(first, last, out);
      if (error != std::errc()) return false;
      at += static_cast<std::size_t>(end - first);
      return true;
    }
    absl::Status error(std::string_view what) const {
      return absl::InvalidArgumentError(
          fmt::format("bad JSON event at byte {}: {}", at, what));
    }
    absl::StatusOr<E> finish(const E& event) {
      skip_space();
      if (at != text.size()) return error("trailing bytes after the object");
      return event;
    }
  };

  [[nodiscard]] std::size_t find(std::string_view name) const {
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      if (fields_[i].name == name) return i;
    }
    return fields_.size();
  }

  std::vector<Field> fields_;
};

}  // namespace two_services
