// Arrow's C data interface -> columns (include/torchbridge/arrow.h): format
// strings, buffers, offsets, null counts, dictionaries and struct children.
// The rules after that are columns.cpp's.

#include "../format/util.h"
#include "internal.h"

#include <torchbridge/arrow.h>

#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace torchbridge {
namespace arrow {
namespace {

constexpr format::EscapeStyle kName{'\'', true, false, true, 200};
constexpr format::EscapeStyle kFormat{0, false, false, false, 40};

std::string field_words(const std::string& name, bool in_table, const std::string& what) {
  if (!in_table) return what;
  return "column " + format::escape(name, kName) + " of " + what;
}

bool starts(const char* s, const char* prefix) {
  return std::strncmp(s, prefix, std::strlen(prefix)) == 0;
}

// The primitive formats: the type and its item size; nullopt for the rest.
std::optional<at::ScalarType> primitive(const char* f) {
  if (f[0] == 0 || f[1] != 0) return std::nullopt;
  switch (f[0]) {
    case 'c': return at::kChar;
    case 'C': return at::kByte;
    case 's': return at::kShort;
    case 'S': return at::kUInt16;
    case 'i': return at::kInt;
    case 'I': return at::kUInt32;
    case 'l': return at::kLong;
    case 'L': return at::kUInt64;
    case 'e': return at::kHalf;
    case 'f': return at::kFloat;
    case 'g': return at::kDouble;
    case 'b': return at::kBool;
    default: return std::nullopt;
  }
}

// Why a format has no tensor form, and what to do instead.
std::pair<std::string, std::string> refusal(const char* f) {
  const std::string s = f;
  if (s == "u" || s == "U" || s == "vu")
    return {"strings", "encode them as numbers first (pyarrow.compute.dictionary_encode "
                       "gives integer codes), or leave the column out"};
  if (s == "z" || s == "Z" || s == "vz" || starts(f, "w:"))
    return {"binary values", "decode them into numbers first, or leave the column out"};
  if (s == "n")
    return {"only nulls (the null type)", "leave the column out, or cast it to a numeric type"};
  if (s == "tdD" || s == "tdm" || starts(f, "ts") || starts(f, "tD") || starts(f, "tt") ||
      starts(f, "ti"))
    return {"dates or times", "cast it to int64 first (pyarrow: arr.cast(pa.int64()) "
                              "gives the raw units), as for NumPy's datetime64"};
  if (starts(f, "d:"))
    return {"decimals", "cast it to float64 first (arr.cast(pa.float64()))"};
  if (s == "+l" || s == "+L" || s == "+vl" || s == "+vL" || starts(f, "+w:"))
    return {"lists", "flatten them (arr.flatten()) or convert each row"};
  if (s == "+s")
    return {"nested structs", "flatten them first (table.flatten())"};
  if (s == "+m") return {"maps", "convert the keys and values separately"};
  if (starts(f, "+u")) return {"unions", "convert each child separately"};
  if (s == "+r") return {"run-end encoded values", "decode them first (pyarrow.compute.run_end_decode)"};
  return {"an unknown Arrow format", "cast it to a numeric type first"};
}

Layout::Field parse_field(const ArrowSchema& s, bool in_table, const std::string& what,
                          const char* api) {
  Layout::Field out;
  out.name = s.name ? s.name : "";
  TORCH_CHECK_VALUE(s.format != nullptr, api, ": the Arrow schema of ",
      field_words(out.name, in_table, what), " has no format string.");
  const char* f = s.format;
  auto t = primitive(f);
  if (s.dictionary) {
    // A dictionary array's values are its indices (signed or unsigned ints).
    TORCH_CHECK_TYPE(t && *t != at::kBool && !c10::isFloatingType(*t), api, ": ",
        field_words(out.name, in_table, what), " is an Arrow dictionary with index format \"",
        format::escape(f, kFormat), "\", which is not an integer type.");
    out.dictionary = true;
  }
  if (!t) {
    const auto why = refusal(f);
    TORCH_CHECK_TYPE(false, api, ": ", field_words(out.name, in_table, what), " holds ",
        why.first, " (Arrow format \"", format::escape(f, kFormat),
        "\"), which no tensor dtype holds; ", why.second, ".");
  }
  TORCH_CHECK_TYPE(s.n_children == 0, api, ": ", field_words(out.name, in_table, what),
      " has Arrow format \"", format::escape(f, kFormat), "\" but ", std::to_string(s.n_children),
      " children; a primitive type has none.");
  out.type = *t;
  out.bits = *t == at::kBool;
  return out;
}

// Checks what the C interface lets one check of an array, and returns its
// buffers.
void check_array(const ArrowArray& a, int64_t buffers, int64_t children,
                 const std::string& who, const char* api) {
  TORCH_CHECK_VALUE(a.release != nullptr, api, ": the Arrow array of ", who,
      " was already released; export it again.");
  TORCH_CHECK_VALUE(a.length >= 0 && a.offset >= 0 &&
                        a.length <= std::numeric_limits<int64_t>::max() / 16 - a.offset,
      api, ": the Arrow array of ", who, " has length ", std::to_string(a.length),
      " and offset ", std::to_string(a.offset), ", which no valid array has.");
  TORCH_CHECK_VALUE(a.null_count >= -1 && a.null_count <= a.length, api,
      ": the Arrow array of ", who, " has null_count ", std::to_string(a.null_count),
      " for length ", std::to_string(a.length), ".");
  TORCH_CHECK_VALUE(a.n_buffers == buffers && (buffers == 0 || a.buffers != nullptr), api,
      ": the Arrow array of ", who, " has ", std::to_string(a.n_buffers), " buffers, but its "
      "type has ", std::to_string(buffers), ".");
  TORCH_CHECK_VALUE(a.n_children == children && (children == 0 || a.children != nullptr), api,
      ": the Arrow array of ", who, " has ", std::to_string(a.n_children),
      " children, but its schema has ", std::to_string(children), ".");
}

Validity validity_of(const ArrowArray& a, int64_t first, int64_t rows, bool whole) {
  Validity v;
  const auto* bits = static_cast<const uint8_t*>(a.buffers[0]);
  // The validity buffer may be absent only when nothing is null.
  if (!bits || a.null_count == 0 || rows == 0) return v;
  v.kind = Validity::Kind::kBitmap;
  v.data = bits;
  v.offset = a.offset + first;
  v.null_count = whole ? a.null_count : -1;  // a slice of a struct counts its own
  return v;
}

// The segment of rows [first, first + rows) of a primitive array.
Segment segment_of(const Layout::Field& f, const ArrowArray& a, int64_t first, int64_t rows,
                   const std::shared_ptr<BufferOwner>& keep, const std::string& who,
                   const char* api) {
  check_array(a, 2, 0, who, api);
  TORCH_CHECK_VALUE(!f.dictionary || a.dictionary != nullptr, api, ": the Arrow array of ",
      who, " has a dictionary type but no dictionary.");
  TORCH_CHECK_VALUE(first + rows <= a.length, api, ": the Arrow array of ", who, " has ",
      std::to_string(a.length), " values, but its struct reads ", std::to_string(first + rows),
      ".");
  TORCH_CHECK_VALUE(a.buffers[1] != nullptr || rows == 0, api, ": the Arrow array of ", who,
      " has no data buffer.");
  Segment s;
  s.validity = validity_of(a, first, rows, first == 0 && rows == a.length);
  const int64_t item = static_cast<int64_t>(c10::elementSize(f.type));
  static char empty_data alignas(16)[16];  // zero rows: any aligned, valid address
  const char* data = static_cast<const char*>(a.buffers[1]);
  ArrayView& v = s.values;
  if (f.bits) {
    s.bit_offset = a.offset + first;
    v.data = const_cast<char*>(data ? data : empty_data);
  } else {
    v.data = rows == 0 || !data ? static_cast<void*>(empty_data)
                                : const_cast<char*>(data + (a.offset + first) * item);
  }
  v.shape = {rows};
  v.strides = {item};
  v.dtype.scalar = f.type;
  v.dtype.itemsize = item;
  v.writable = false;  // Arrow buffers are immutable
  v.owner = BufferOwner(new std::shared_ptr<BufferOwner>(keep), [](void* p) {
    delete static_cast<std::shared_ptr<BufferOwner>*>(p);
  });
  return s;
}

}  // namespace

Layout parse_schema(const ArrowSchema& schema, const std::string& what, const char* api) {
  TORCH_CHECK_VALUE(schema.release != nullptr, api, ": the Arrow schema of ", what,
      " was already released; export it again.");
  TORCH_CHECK_VALUE(schema.format != nullptr, api, ": the Arrow schema of ", what,
      " has no format string.");
  Layout out;
  if (std::strcmp(schema.format, "+s") == 0 && !schema.dictionary) {
    out.two_d = true;
    TORCH_CHECK_VALUE(schema.n_children >= 0 && (schema.n_children == 0 || schema.children),
        api, ": the Arrow struct schema of ", what, " lists ",
        std::to_string(schema.n_children), " children but gives none.");
    for (int64_t i = 0; i < schema.n_children; ++i) {
      TORCH_CHECK_VALUE(schema.children[i] != nullptr, api, ": the Arrow schema of ", what,
          " has no child ", std::to_string(i), ".");
      out.fields.push_back(parse_field(*schema.children[i], true, what, api));
    }
  } else {
    out.fields.push_back(parse_field(schema, false, what, api));
  }
  return out;
}

std::vector<Column> make_columns(const Layout& layout) {
  std::vector<Column> cols(layout.fields.size());
  for (size_t i = 0; i < cols.size(); ++i) {
    cols[i].name = layout.fields[i].name;
    cols[i].as_type = layout.fields[i].type;  // typed even with no chunk
  }
  return cols;
}

void append_chunk(const Layout& layout, const ArrowArray& array,
                  const std::shared_ptr<BufferOwner>& keep, std::vector<Column>& columns,
                  const std::string& what, const char* api) {
  if (!layout.two_d) {
    const auto& f = layout.fields[0];
    columns[0].segments.push_back(segment_of(f, array, 0, array.length, keep, what, api));
    return;
  }
  const int64_t k = static_cast<int64_t>(layout.fields.size());
  check_array(array, 1, k, what, api);
  if (array.null_count != 0 && array.buffers[0] != nullptr && array.length > 0) {
    const Validity v = validity_of(array, 0, array.length, true);
    int64_t gone = v.null_count;
    if (gone < 0) {
      gone = 0;
      for (int64_t i = 0; i < array.length; ++i)
        gone += !((v.data[(v.offset + i) >> 3] >> ((v.offset + i) & 7)) & 1);
    }
    TORCH_CHECK_VALUE(gone == 0, api, ": ", what, " is an Arrow struct array with ",
        std::to_string(gone), " null rows; flatten it first (pyarrow: StructArray.flatten() "
        "gives each field with the struct's nulls) and convert the fields.");
  }
  for (int64_t j = 0; j < k; ++j) {
    const auto& f = layout.fields[j];
    TORCH_CHECK_VALUE(array.children[j] != nullptr, api, ": the Arrow array of ", what,
        " has no child ", std::to_string(j), ".");
    const std::string who = field_words(f.name, true, what);
    columns[j].segments.push_back(segment_of(f, *array.children[j], array.offset,
                                             array.length, keep, who, api));
  }
}

BufferOwner default_owner(ArrowArray* held) {
  return BufferOwner(held, [](void* p) {
    auto* a = static_cast<ArrowArray*>(p);
    if (a->release) a->release(a);
    delete a;
  });
}

namespace {

// Moves `array` into fresh memory (the spec's move: the source is marked
// released) and hands that to `own`.
std::shared_ptr<BufferOwner> take(ArrowArray* array, const OwnArray& own,
                                  const ArrowArray*& held) {
  auto* moved = new ArrowArray(*array);
  array->release = nullptr;
  held = moved;
  return std::make_shared<BufferOwner>(own(moved));
}

struct SchemaGuard {
  ArrowSchema s{};
  ~SchemaGuard() {
    if (s.release) s.release(&s);
  }
};

struct StreamGuard {
  ArrowArrayStream s{};
  ~StreamGuard() {
    if (s.release) s.release(&s);
  }
};

}  // namespace

Table read_array(const ArrowSchema& schema, ArrowArray* array, const std::string& what,
                 const char* api, const OwnArray& own) {
  TORCH_CHECK_VALUE(array != nullptr && array->release != nullptr, api, ": the Arrow array of ",
      what, " is missing or was already released; export it again.");
  const ArrowArray* held = nullptr;
  auto keep = take(array, own, held);
  Table t;
  t.layout = parse_schema(schema, what, api);
  t.columns = make_columns(t.layout);
  append_chunk(t.layout, *held, keep, t.columns, what, api);
  return t;  // `keep` goes: the views hold the array now
}

Table read_stream(ArrowArrayStream* stream, const std::string& what, const char* api,
                  const OwnArray& own) {
  TORCH_CHECK_VALUE(stream != nullptr && stream->release != nullptr, api,
      ": the Arrow stream of ", what, " is missing or was already released.");
  StreamGuard g;
  g.s = *stream;
  stream->release = nullptr;  // ours now: released once, by the guard
  const auto failed = [&](int rc, const char* step) {
    const char* e = g.s.get_last_error ? g.s.get_last_error(&g.s) : nullptr;
    TORCH_CHECK_VALUE(false, api, ": reading the Arrow stream of ", what, " failed in ",
        step, " (error ", std::to_string(rc), e ? std::string(": ") + e : std::string(),
        ").");
  };
  Table t;
  {
    SchemaGuard schema;
    const int rc = g.s.get_schema(&g.s, &schema.s);
    if (rc != 0) failed(rc, "get_schema");
    t.layout = parse_schema(schema.s, what, api);
  }
  t.columns = make_columns(t.layout);
  for (;;) {
    ArrowArray next{};
    const int rc = g.s.get_next(&g.s, &next);
    if (rc != 0) {
      if (next.release) next.release(&next);
      failed(rc, "get_next");
    }
    if (!next.release) break;  // the end of the stream
    const ArrowArray* held = nullptr;
    auto keep = take(&next, own, held);
    append_chunk(t.layout, *held, keep, t.columns, what, api);
  }
  return t;
}

ColumnsOptions columns_options(const Table& t, const std::string& what) {
  ColumnsOptions l;
  l.two_d = t.layout.two_d;
  l.what = what;
  l.fill_hint = "fill them first (pyarrow.compute.fill_null, polars' fill_null)";
  return l;
}

}  // namespace arrow

at::Tensor arrow_to_tensor(const ArrowSchema& schema, ArrowArray* array,
                           const CoerceOptions& options) {
  constexpr const char* api = "torchbridge::arrow_to_tensor";
  const std::string what = "the Arrow array";
  auto t = arrow::read_array(schema, array, what, api, arrow::default_owner);
  return detail::columns_to_tensor(t.columns, arrow::columns_options(t, what), options, api);
}

at::Tensor arrow_stream_to_tensor(ArrowArrayStream* stream, const CoerceOptions& options) {
  constexpr const char* api = "torchbridge::arrow_stream_to_tensor";
  const std::string what = "the Arrow stream";
  auto t = arrow::read_stream(stream, what, api, arrow::default_owner);
  return detail::columns_to_tensor(t.columns, arrow::columns_options(t, what), options, api);
}

}  // namespace torchbridge
