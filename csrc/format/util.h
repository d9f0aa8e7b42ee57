#pragma once
// Small helpers every layer shares (format, core, python), torch-free and
// header-only: the one shape formatter, the one escaper of untrusted text
// for messages, the one C/Fortran stride loop.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>

namespace torchbridge::format {

// Python's repr of a tuple of ints: "()", "(3,)", "(3, 4)". `dims` is any
// sequence with size() and operator[] (std::vector, c10::SmallVector,
// at::IntArrayRef).
template <class Dims>
std::string tuple_str(const Dims& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (dims.size() == 1) s += ",";
  return s + ")";
}

// How escape() shows text. Printable ASCII stands as it is, except '\\' and
// the quote character; every other byte is \xNN unless a field says
// otherwise.
struct EscapeStyle {
  char quote = 0;              // wrap the text in it ('"' or '\''); 0: none
  bool backslash = false;      // '\\' and the quote as \\ and \" (else \xNN)
  bool newline = false;        // '\n' as \n (else \x0a)
  bool utf8 = false;           // bytes >= 0x80 as they are (else \xNN)
  size_t max = std::numeric_limits<size_t>::max();  // bytes shown, then "..."
};

// quote(): a path or a member name, in double quotes (format/io.h).
constexpr EscapeStyle kQuoted{'"', true, false, true};
// An excerpt of a .npy header, bare (format/npy.cpp).
constexpr EscapeStyle kExcerpt{0, false, true, false, 120};
// A zip member name as its raw bytes, in single quotes (format/zip.cpp).
constexpr EscapeStyle kRawName{'\'', false, false, false, 200};

// `s` as `how` says, for a message: never a control byte, never unbounded
// when `how.max` is set.
inline std::string escape(std::string_view s, const EscapeStyle& how) {
  std::string out;
  if (how.quote) out += how.quote;
  const size_t n = std::min(s.size(), how.max);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const bool special = c == '\\' || (how.quote && c == static_cast<unsigned char>(how.quote));
    if (special && how.backslash) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (!special && ((c >= 0x20 && c < 0x7f) || (how.utf8 && c >= 0x80))) {
      out += static_cast<char>(c);
    } else if (c == '\n' && how.newline) {
      out += "\\n";
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > how.max) out += "...";
  if (how.quote) out += how.quote;
  return out;
}

// The element strides of a dense array of `shape` in C order (last axis
// fastest) or Fortran order (first axis fastest), as `Strides` (a vector
// type). Extent-0 axes count as 1, as NumPy's do, so that a zero-size array
// gets the strides of its nonzero neighbours.
template <class Strides, class Shape>
Strides contiguous_strides(const Shape& shape, bool c_order) {
  const size_t n = shape.size();
  Strides strides(n);
  int64_t s = 1;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = c_order ? n - 1 - k : k;
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

}  // namespace torchbridge::format
