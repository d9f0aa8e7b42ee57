#pragma once
// Columns: tables (a pandas DataFrame, an Arrow Table or RecordBatch, a
// polars DataFrame) and single columns with missing values, as one tensor.
// Python-free: every front-end (pandas, Arrow's C data interface, C++
// programs) only describes its columns; the rules (common dtype, missing
// values, share or copy) and the one gathering copy live here.

#include <torchbridge/array_view.h>
#include <torchbridge/core.h>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torchbridge {

// Which values of a segment are missing.
struct Validity {
  enum class Kind {
    kNone,      // every value is present
    kBitmap,    // Arrow's validity bitmap: bit (offset + i), LSB first, 1 = valid
    kByteMask,  // pandas' mask: one byte per value at data[i * stride], nonzero = missing
  };
  Kind kind = Kind::kNone;
  const uint8_t* data = nullptr;
  int64_t offset = 0;  // kBitmap: the bit of the segment's first value
  int64_t stride = 1;  // kByteMask: bytes between mask entries
  // How many values are missing, when the producer knows (Arrow's
  // null_count); -1: count them.
  int64_t null_count = -1;
};

// A run of rows of one column: 1-D values (any byte stride) and their
// validity. Arrow's bit-packed booleans have `bit_offset >= 0`: then
// `values.data` is the bitmap, value i is bit (bit_offset + i), and
// values.shape[0] the length (values.dtype is bool, itemsize 1).
struct Segment {
  ArrayView values;
  int64_t bit_offset = -1;
  Validity validity;
  int64_t length() const { return values.shape.empty() ? 1 : values.shape[0]; }
};

// One column: its name (for errors) and its rows, one segment per chunk
// (a pandas column has one; an Arrow ChunkedArray's one per chunk). All
// segments hold the same element type.
struct Column {
  std::string name;
  std::vector<Segment> segments;
  // The type the column counts as for the common dtype, when it differs
  // from its values' (pandas' categorical codes count as int64).
  std::optional<at::ScalarType> as_type;

  int64_t length() const;
  at::ScalarType type() const;  // as_type, else the values' type
};

// NumPy's result_type of two dtypes torch has (int64 with uint64 is
// float64, int16 with float16 is float32, ...), the rule a DataFrame's
// common dtype follows; types NumPy lacks promote as torch does.
at::ScalarType numpy_result_type(at::ScalarType a, at::ScalarType b);

// How a table's columns become one tensor.
struct ColumnsOptions {
  // A (rows, k) tensor, column j of the table in column j (column-major on
  // the host, strides (1, rows), as pandas' to_numpy gives; row-major when
  // staged for a device); else
  // a 1-D tensor of the single column (a Series, an Index, an Array).
  bool two_d = true;
  // The rows of a table with no columns (it has no column to count them).
  int64_t rows = 0;
  // What the input is, for errors: "the DataFrame", "the Table".
  std::string what = "the table";
  // How to fill missing values in the input's own library, for the
  // integer-target error: "df.fillna(0)", "table.fill_null(0)".
  std::string fill_hint = "fill them first";
};

// The columns as one tensor, cast in the same pass to their common dtype
// (numpy_result_type of Column::type(), then the float policy; `dtype=`
// wins). Missing values become NaN when the target is floating or complex;
// otherwise ValueError naming the column, how many values are missing and
// the fix (dtype=torch.float32, or fill them). A single column of one
// segment with no missing values converts as its ArrayView does (so
// copy=False shares, read-only buffers copy once by default); anything else
// is gathered in one copy, in parallel pieces of rows, and copy=False raises
// ValueError saying why one buffer cannot be shared. Views are consumed (a
// shared result takes the owner).
at::Tensor columns_to_tensor(std::vector<Column>& columns, const ColumnsOptions& layout,
                             const CoerceOptions& options = {});

}  // namespace torchbridge
