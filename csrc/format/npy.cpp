#include "npy.h"

#include "magic.h"
#include "util.h"

#include <cstdio>
#include <cstring>
#include <limits>

namespace torchbridge::format {
namespace {

struct DTypeInfo {
  DType dtype;
  char kind;
  uint8_t size;
  const char* name;
};

// The table every mapping below reads; in DType's order.
constexpr DTypeInfo kDTypes[] = {
#define TORCHBRIDGE_DTYPE_INFO(Id, name, kind, size, Torch, Npy) \
  {DType::k##Id, kind, size, name},
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_INFO)
#undef TORCHBRIDGE_DTYPE_INFO
};

const DTypeInfo& info(DType t) { return kDTypes[static_cast<size_t>(t)]; }

// Printable excerpt of untrusted text for messages.
std::string excerpt(const char* p, size_t n) {
  return escape(std::string_view(p, n), kExcerpt);
}

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02X", p[i]);
    if (i) out += ' ';
    out += buf;
  }
  return out;
}

// Maps a descr string ("<f4", "|b1", ">c16") to a dtype, or throws a message
// that says what the dtype is and what to do instead.
void parse_descr(const std::string& descr, NpyHeader& out,
                 const std::string& where) {
  const std::string quoted = "'" + excerpt(descr.data(), descr.size()) + "'";
  if (descr.empty()) fail(where, "the header's descr is an empty string");
  char order = '=';
  size_t i = 0;
  if (std::strchr("<>|=", descr[0])) {
    order = descr[0];
    i = 1;
  }
  const char kind = i < descr.size() ? descr[i] : '\0';
  const std::string size_text = descr.substr(i < descr.size() ? i + 1 : i);
  switch (kind) {
    case 'O':
      fail(where, "dtype " + quoted +
                      " is an object array, stored with pickle; torchbridge "
                      "never unpickles (unpickling can run arbitrary code, "
                      "CVE-2019-6446), so object arrays cannot be loaded; "
                      "save a numeric array instead");
    case 'V':
      fail(where, "dtype " + quoted +
                      " is raw void bytes and has no torch dtype (NumPy saves "
                      "ml_dtypes arrays such as bfloat16 this way, losing "
                      "their type); save them as float32, or their bits as "
                      "uint16/uint8");
    case 'S':
    case 'a':
    case 'U':
      fail(where, "dtype " + quoted +
                      " is a string dtype and has no torch dtype; encode the "
                      "strings as numbers in NumPy first");
    case 'M':
    case 'm':
      fail(where, "dtype " + quoted + " is " +
                      (kind == 'M' ? "datetime64" : "timedelta64") +
                      " and has no torch dtype; convert it in NumPy first, "
                      "e.g. a.astype(np.int64)");
    default:
      break;
  }
  unsigned size = 0;
  bool digits_ok = !size_text.empty() && size_text.size() <= 2;
  for (char c : size_text) {
    if (c < '0' || c > '9') digits_ok = false;
  }
  if (digits_ok) size = static_cast<unsigned>(std::stoul(size_text));
  if (digits_ok && ((kind == 'f' && (size == 12 || size == 16)) ||
                    (kind == 'c' && (size == 24 || size == 32)))) {
    fail(where, "dtype " + quoted +
                    " is long double, which has no torch dtype; convert it in "
                    "NumPy first, e.g. a.astype(np.float64)");
  }
  if (digits_ok) {
    for (const auto& d : kDTypes) {
      if (d.kind == kind && d.size == size) {
        out.dtype = d.dtype;
        const bool other_order = native_little_endian() ? order == '>'
                                                        : order == '<';
        out.byteswapped = d.size > 1 && other_order;
        return;
      }
    }
  }
  fail(where, "unsupported dtype " + quoted +
                  "; torchbridge reads bool, int8/16/32/64, "
                  "uint8/16/32/64, float16/32/64 and complex64/128 "
                  "(descr like '<f4', '>i8', '|b1')");
}

// The header dict, by a strict grammar: any key order, single or double
// quotes, any whitespace, trailing commas; nothing is evaluated.
class HeaderParser {
 public:
  HeaderParser(const char* text, size_t len, const std::string& where,
               bool allow_long_suffix)
      : begin_(text), p_(text), end_(text + len), where_(where),
        allow_long_suffix_(allow_long_suffix) {}

  void parse(NpyHeader& out) {
    bool has_descr = false, has_order = false, has_shape = false;
    skip_space();
    expect('{', "the header must be a dict starting with '{'");
    skip_space();
    while (peek() != '}') {
      const char* key_at = p_;
      const std::string key = string_literal("a quoted key");
      skip_space();
      expect(':', "expected ':' after the key");
      skip_space();
      auto once = [&](bool& seen) {
        if (seen) {
          p_ = key_at;
          fail(where_, "malformed header: the key '" + key +
                           "' appears twice (" + context() + ")");
        }
        seen = true;
      };
      if (key == "descr") {
        once(has_descr);
        if (peek() == '[' || peek() == '(') {
          fail(where_,
               "the header's descr is a structured or sub-array dtype (a "
               "list of fields), which has no torch dtype; torchbridge reads "
               "plain arrays only");
        }
        parse_descr(string_literal("the descr string"), out, where_);
      } else if (key == "fortran_order") {
        once(has_order);
        out.fortran_order = boolean();
      } else if (key == "shape") {
        once(has_shape);
        out.shape = tuple();
      } else {
        fail(where_, "the header has an unexpected key '" +
                         excerpt(key.data(), key.size()) +
                         "'; a .npy header has exactly 'descr', "
                         "'fortran_order' and 'shape'");
      }
      skip_space();
      if (peek() == ',') {
        ++p_;
        skip_space();
      } else if (peek() != '}') {
        syntax("expected ',' or '}' after a value");
      }
    }
    ++p_;
    skip_space();
    if (p_ != end_) syntax("unexpected text after the header dict");
    std::string missing;
    for (auto [seen, name] : {std::pair{has_descr, "'descr'"},
                              std::pair{has_order, "'fortran_order'"},
                              std::pair{has_shape, "'shape'"}}) {
      if (!seen) missing += (missing.empty() ? "" : ", ") + std::string(name);
    }
    if (!missing.empty()) {
      fail(where_, "the header lacks " + missing +
                       "; a .npy header has exactly 'descr', "
                       "'fortran_order' and 'shape' (" + context() + ")");
    }
  }

 private:
  int peek() const { return p_ < end_ ? static_cast<unsigned char>(*p_) : -1; }

  std::string context() const {
    return "at byte " + std::to_string(p_ - begin_) + " of \"" +
           excerpt(begin_, static_cast<size_t>(end_ - begin_)) + "\"";
  }

  [[noreturn]] void syntax(const std::string& what) const {
    fail(where_, "malformed header: " + what + " (" + context() + ")");
  }

  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' ||
                         *p_ == '\r' || *p_ == '\f' || *p_ == '\v')) {
      ++p_;
    }
  }

  void expect(char c, const char* what) {
    if (peek() != static_cast<unsigned char>(c)) syntax(what);
    ++p_;
  }

  std::string string_literal(const char* what) {
    const int q = peek();
    if (q != '\'' && q != '"') syntax(std::string("expected ") + what);
    const char* start = ++p_;
    while (p_ < end_ && *p_ != q) {
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '\\') syntax("escape sequences are not supported in strings");
      if (c < 0x20 || c >= 0x7f) syntax("non-printable byte in a string");
      ++p_;
    }
    if (p_ == end_) {
      p_ = start - 1;
      syntax("unterminated string");
    }
    std::string s(start, static_cast<size_t>(p_ - start));
    ++p_;
    return s;
  }

  static bool ident_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
  }

  bool word(const char* w) {
    const size_t n = std::strlen(w);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, w, n) != 0) {
      return false;
    }
    if (p_ + n < end_ && ident_char(static_cast<unsigned char>(p_[n]))) {
      return false;
    }
    p_ += n;
    return true;
  }

  bool boolean() {
    if (word("True")) return true;
    if (word("False")) return false;
    syntax("fortran_order must be True or False");
  }

  int64_t integer() {
    const char* start = p_;
    if (peek() == '-') {
      ++p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      fail(where_, "the shape has a negative dimension " +
                       excerpt(start, static_cast<size_t>(p_ - start)) +
                       " (" + context() + ")");
    }
    if (peek() < '0' || peek() > '9') {
      syntax("expected a non-negative integer in the shape");
    }
    uint64_t v = 0;
    bool overflow = false;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      const uint64_t digit = static_cast<uint64_t>(*p_ - '0');
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) -
               digit) / 10) {
        overflow = true;
      } else {
        v = v * 10 + digit;
      }
      ++p_;
    }
    if (overflow) {
      fail(where_, "the shape has a dimension " +
                       excerpt(start, static_cast<size_t>(p_ - start)) +
                       " that does not fit in 64 bits (" + context() + ")");
    }
    // Python 2's long literals (3L), which NumPy also accepts in 1.0/2.0
    // headers (numpy/lib/format.py, _filter_header).
    if (allow_long_suffix_ && (peek() == 'L' || peek() == 'l')) ++p_;
    if (ident_char(peek()) || peek() == '.') {
      syntax("malformed integer in the shape");
    }
    return static_cast<int64_t>(v);
  }

  std::vector<int64_t> tuple() {
    expect('(', "the shape must be a tuple like (3, 4), (3,) or ()");
    std::vector<int64_t> dims;
    skip_space();
    bool comma = false;
    while (peek() != ')') {
      if (dims.size() == kMaxRank) {
        fail(where_, "the shape has more than " + std::to_string(kMaxRank) +
                         " dimensions (NumPy's limit) (" + context() + ")");
      }
      dims.push_back(integer());
      skip_space();
      comma = false;
      if (peek() == ',') {
        comma = true;
        ++p_;
        skip_space();
      } else if (peek() != ')') {
        syntax("expected ',' or ')' in the shape");
      }
    }
    if (dims.size() == 1 && !comma) {
      syntax("the shape (n) is an int, not a tuple; a 1-d shape is (n,)");
    }
    ++p_;
    return dims;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  const std::string& where_;
  bool allow_long_suffix_;
};

uint32_t read_le(const uint8_t* p, size_t n) {
  uint32_t v = 0;
  for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

}  // namespace

size_t itemsize(DType t) { return info(t).size; }

const char* dtype_name(DType t) { return info(t).name; }

std::string native_descr(DType t) {
  const auto& d = info(t);
  const char order = d.size == 1 ? '|' : (native_little_endian() ? '<' : '>');
  return std::string(1, order) + d.kind + std::to_string(d.size);
}

void parse_header_text(const char* text, size_t len, NpyHeader& out,
                       const std::string& where) {
  HeaderParser(text, len, where, out.major < 3).parse(out);
  // Sizes: the product of the dims (zeros counted as 1, so that strides of
  // a zero-size array fit too) times the item size must fit in int64.
  const uint64_t size = itemsize(out.dtype);
  uint64_t extent = 1;
  bool overflow = false;
  out.numel = 1;
  for (int64_t d : out.shape) {
    const uint64_t du = d == 0 ? 1 : static_cast<uint64_t>(d);
    if (__builtin_mul_overflow(extent, du, &extent)) overflow = true;
    if (d == 0) out.numel = 0;
  }
  uint64_t bytes = 0;
  if (overflow || __builtin_mul_overflow(extent, size, &bytes) ||
      bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(where, "the shape " + tuple_str(out.shape) + " of " +
                    dtype_name(out.dtype) +
                    " is too large: its size in bytes overflows 64 bits");
  }
  if (out.numel != 0) out.numel = static_cast<int64_t>(extent);
  out.nbytes = static_cast<uint64_t>(out.numel) * size;
}

NpyHeader read_npy_header(Stream& in, const std::string& where, DataFit fit) {
  NpyHeader h;
  uint8_t pre[12];
  const uint64_t total = in.remaining();
  if (total < 10) {
    const size_t n = static_cast<size_t>(total);
    in.read(pre, n, "the magic");
    if (sniff(pre, n) == FileKind::kZip) {
      fail(where, "not a .npy file: it starts like a zip archive");
    }
    fail(where, "not a .npy file: it has " + std::to_string(n) +
                    " bytes, fewer than the 10 bytes of the smallest "
                    ".npy header");
  }
  in.read(pre, 8, "the magic");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0) {
    std::string hint;
    if (sniff(pre, 8) == FileKind::kZip) {
      hint = " (it is a zip archive: load .npz files with npz::load)";
    }
    fail(where, "not a .npy file: it starts with bytes " + hex_bytes(pre, 6) +
                    ", not the magic \\x93NUMPY" + hint);
  }
  h.major = pre[6];
  h.minor = pre[7];
  if (h.minor != 0 || h.major < 1 || h.major > 3) {
    fail(where, "unsupported .npy format version " + std::to_string(h.major) +
                    "." + std::to_string(h.minor) +
                    " (NumPy writes 1.0, 2.0 and 3.0)");
  }
  const size_t len_size = h.major == 1 ? 2 : 4;
  in.read(pre + 8, len_size, "the header length");
  const uint64_t header_len = read_le(pre + 8, len_size);
  const uint64_t prefix = 8 + len_size;
  if (header_len > in.remaining()) {
    fail(where, "truncated file: the header length field says " +
                    std::to_string(header_len) + " bytes, but only " +
                    std::to_string(in.remaining()) + " follow");
  }
  if (header_len > kMaxHeaderLen) {
    fail(where, "the header is " + std::to_string(header_len) +
                    " bytes, over the limit of " +
                    std::to_string(kMaxHeaderLen) +
                    " (NumPy's max_header_size); the file is corrupt or "
                    "hostile");
  }
  std::string text(static_cast<size_t>(header_len), '\0');
  in.read(text.data(), text.size(), "the header");
  parse_header_text(text.data(), text.size(), h, where);
  h.data_offset = prefix + header_len;
  const uint64_t avail = in.remaining();
  if (fit == DataFit::kAtLeast ? h.nbytes > avail : h.nbytes != avail) {
    fail(where, std::string(fit == DataFit::kAtLeast ? "truncated data"
                                                     : "wrong data size") +
                    ": the shape " + tuple_str(h.shape) + " of " +
                    dtype_name(h.dtype) + " needs " + std::to_string(h.nbytes) +
                    " bytes after the " + std::to_string(h.data_offset) +
                    "-byte header, but " + std::to_string(avail) +
                    (fit == DataFit::kAtLeast ? " follow" : " are stored"));
  }
  return h;
}

std::string make_npy_header(DType dtype, bool fortran_order,
                            const std::vector<int64_t>& shape) {
  // numpy/lib/format.py: _write_array_header and _wrap_header.
  std::string dict = "{'descr': '" + native_descr(dtype) +
                     "', 'fortran_order': " +
                     (fortran_order ? "True" : "False") +
                     ", 'shape': " + tuple_str(shape) + ", }";
  if (!shape.empty()) {
    // GROWTH_AXIS_MAX_DIGITS = 21: room to rewrite the growing dim in place.
    const size_t digits =
        std::to_string(fortran_order ? shape.back() : shape.front()).size();
    if (digits < 21) dict.append(21 - digits, ' ');
  }
  const size_t hlen = dict.size() + 1;
  size_t len_size = 2;
  size_t pad = 64 - ((kMagicLen + 2 + len_size + hlen) % 64);
  uint8_t major = 1;
  if (hlen + pad > 0xFFFF) {
    major = 2;
    len_size = 4;
    pad = 64 - ((kMagicLen + 2 + len_size + hlen) % 64);
  }
  const uint32_t total = static_cast<uint32_t>(hlen + pad);
  std::string out(kMagic, kMagicLen);
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < len_size; ++i) {
    out += static_cast<char>((total >> (8 * i)) & 0xFF);
  }
  out += dict;
  out.append(pad, ' ');
  out += '\n';
  return out;
}

namespace {

// Reverses the bytes of each of n items of type U at p (memcpy: p may be
// misaligned).
template <typename U, U (*swap)(U)>
void swap_items(uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    U v;
    std::memcpy(&v, p + sizeof(U) * i, sizeof(U));
    v = swap(v);
    std::memcpy(p + sizeof(U) * i, &v, sizeof(U));
  }
}

uint16_t bswap16(uint16_t v) { return __builtin_bswap16(v); }
uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }
uint64_t bswap64(uint64_t v) { return __builtin_bswap64(v); }

}  // namespace

void byteswap(void* data, uint64_t count, DType dtype) {
  size_t unit = itemsize(dtype);
  if (dtype == DType::kComplex64 || dtype == DType::kComplex128) unit /= 2;
  swap_units(data, count * (itemsize(dtype) / unit), unit);
}

void swap_units(void* data, uint64_t n, size_t unit) {
  auto* p = static_cast<uint8_t*>(data);
  switch (unit) {
    case 2:
      swap_items<uint16_t, bswap16>(p, n);
      break;
    case 4:
      swap_items<uint32_t, bswap32>(p, n);
      break;
    case 8:
      swap_items<uint64_t, bswap64>(p, n);
      break;
    default:
      break;  // one-byte items
  }
}

}  // namespace torchbridge::format
