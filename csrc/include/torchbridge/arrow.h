#pragma once
// Apache Arrow's C data interface -> tensors, Python-free. The structs are
// declared from the public specification
// (https://arrow.apache.org/docs/format/CDataInterface.html and
// CStreamInterface.html), guarded by the spec's own macros so a program
// that includes Arrow's header as well sees one definition.

#include <torchbridge/columns.h>
#include <torchbridge/core.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema** children;
  struct ArrowSchema* dictionary;
  void (*release)(struct ArrowSchema*);
  void* private_data;
};

struct ArrowArray {
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void** buffers;
  struct ArrowArray** children;
  struct ArrowArray* dictionary;
  void (*release)(struct ArrowArray*);
  void* private_data;
};

#endif  // ARROW_C_DATA_INTERFACE

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
  int (*get_schema)(struct ArrowArrayStream*, struct ArrowSchema* out);
  int (*get_next)(struct ArrowArrayStream*, struct ArrowArray* out);
  const char* (*get_last_error)(struct ArrowArrayStream*);
  void (*release)(struct ArrowArrayStream*);
  void* private_data;
};

#endif  // ARROW_C_STREAM_INTERFACE

namespace torchbridge {

// One Arrow array as a tensor. A struct array (a record batch) is a table:
// (length, k), its children in order; any other array is 1-D. Takes over
// `array` (moved out: array->release is null on return, also on an error):
// its release callback runs exactly once, when the last tensor sharing its
// buffers dies, or before this returns when the result is a copy. `schema`
// is only read (the caller releases it).
//
// Types: bool (bit-packed; unpacked by the copy), int8..64, uint8..64,
// float16/32/64; dictionary arrays give their indices. Without nulls a
// primitive column's buffer is shared with copy=false (Arrow buffers are
// immutable, so copy=None copies them once, as any read-only buffer); nulls
// become NaN for floating targets and raise ValueError otherwise. Strings,
// binary, lists, dates, timestamps, decimals and other types raise
// TypeError naming the column and the fix.
at::Tensor arrow_to_tensor(const ArrowSchema& schema, ArrowArray* array,
                           const CoerceOptions& options = {});

// A stream of arrays (chunks) of one schema as one tensor, gathered chunk by
// chunk into one output (a single chunk without nulls converts as
// arrow_to_tensor's). Takes over `stream` (released before return).
at::Tensor arrow_stream_to_tensor(ArrowArrayStream* stream,
                                  const CoerceOptions& options = {});

namespace arrow {

// What a schema describes: a table (a struct's children) or one column;
// TypeError for a type without a tensor form, before any data is read.
struct Layout {
  bool two_d = false;
  struct Field {
    std::string name;
    at::ScalarType type;  // the values' (a dictionary's: its indices')
    bool bits = false;    // Arrow's bit-packed booleans
    bool dictionary = false;
  };
  std::vector<Field> fields;
};
// `what` names the input in errors ("the Table").
Layout parse_schema(const ArrowSchema& schema, const std::string& what, const char* api);

// Empty columns for a layout (names and types), to which chunks append.
std::vector<Column> make_columns(const Layout& layout);

// Appends one array (a chunk of `layout`) to `columns` as segments whose
// views borrow its buffers and each hold a reference to `keep` (which
// releases the array when the last one is gone). Validates what the C
// interface lets one check (lengths, offsets, null counts, buffer and child
// counts, the dictionary) and raises ValueError for struct-level nulls.
void append_chunk(const Layout& layout, const ArrowArray& array,
                  const std::shared_ptr<BufferOwner>& keep, std::vector<Column>& columns,
                  const std::string& what, const char* api);

// An array read into columns, and its layout.
struct Table {
  Layout layout;
  std::vector<Column> columns;
};

// Owns a moved ArrowArray (in memory of ours, from `new`): the returned
// owner calls its release callback and deletes it, once. If `own` throws,
// it must have done both first.
using OwnArray = std::function<BufferOwner(ArrowArray* held)>;
// The owner C++ programs use: release and delete when the owner goes.
BufferOwner default_owner(ArrowArray* held);

// One array (moved out of `array`, which is marked released) as columns.
Table read_array(const ArrowSchema& schema, ArrowArray* array, const std::string& what,
                 const char* api, const OwnArray& own);
// Every chunk of a stream (moved out of `stream` and released before
// return; each chunk owned through `own`) as columns.
Table read_stream(ArrowArrayStream* stream, const std::string& what, const char* api,
                  const OwnArray& own);
// How columns_to_tensor lays such a table out and names it in errors.
ColumnsOptions columns_options(const Table& t, const std::string& what);

}  // namespace arrow
}  // namespace torchbridge
