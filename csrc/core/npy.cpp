// torchbridge::npy / npz: .npy and .npz files as tensors. The file formats
// themselves (header grammar, zip directory, inflate, atomic writes) live in
// csrc/format/, free of LibTorch; this file turns their results into tensors.

#include <torchbridge/core.h>
#include <torchbridge/npy.h>

#include "../format/io.h"
#include "../format/magic.h"
#include "../format/npy.h"
#include "../format/util.h"
#include "../format/zip.h"
#include "internal.h"
#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>

#include <exception>
#include <memory>
#include <optional>
#include <unordered_set>

namespace torchbridge {
namespace {

using format::DType;
using format::NpyHeader;

at::ScalarType scalar_type(DType t) {
  switch (t) {
#define TORCHBRIDGE_DTYPE_TO_TORCH(Id, name, kind, size, Torch, Npy) \
  case DType::k##Id: return at::ScalarType::Torch;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_TO_TORCH)
#undef TORCHBRIDGE_DTYPE_TO_TORCH
  }
  TORCH_INTERNAL_ASSERT(false, "unknown format::DType");
}

std::optional<DType> npy_dtype(at::ScalarType t) {
  switch (t) {
#define TORCHBRIDGE_DTYPE_FROM_TORCH(Id, name, kind, size, Torch, Npy) \
  case at::ScalarType::Torch: return DType::k##Id;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_FROM_TORCH)
#undef TORCHBRIDGE_DTYPE_FROM_TORCH
    default: return std::nullopt;
  }
}

// Column-major strides for Fortran order, row-major otherwise. The header
// parser checked that these products fit in int64.
std::vector<int64_t> strides_of(const NpyHeader& h) {
  return format::contiguous_strides<std::vector<int64_t>>(h.shape, !h.fortran_order);
}

// Plain 4 KB pages, not NumPy's huge-page advice: measured on the CI VM
// kind (which returns freed memory to its host), a 256 MB load took 36-56
// ms huge-page backed in a tight loop but 218-365 ms after 3 s idle (fresh
// huge pages are host-unbacked again), against 64-96 ms either way with 4 KB
// pages (benchmarks/bench_idle.py). Predictable beats best case. Up to
// the host cache's cap the memory comes from empty_host, which hands back
// a freed output's pages already mapped (a 64 MB load: 7 ms instead of 18).
at::Tensor allocate(const NpyHeader& h) {
  return detail::empty_host(h.shape, strides_of(h), scalar_type(h.dtype));
}

// A bool tensor must hold 0 or 1 in every byte (anything else is undefined
// behaviour in torch's kernels); NumPy reads any nonzero byte as True.
// Writes only the bytes that need it, so on a private mapping the untouched
// pages stay shared with the page cache.
void normalize_bools(void* data, uint64_t n) {
  auto* p = static_cast<uint8_t*>(data);
  for (uint64_t i = 0; i < n; ++i) {
    if (p[i] > 1) p[i] = 1;
  }
}

// Runs fn(begin, end) over [0, n) in pieces of `grain` items on
// parallel.h's pool: the caller claims pieces too, so a reader thread the
// scheduler runs late, or one that could not be created (RLIMIT_NPROC, a
// container's pids limit), costs nothing; the first exception is rethrown.
template <class F>
void in_parts(int64_t n, int64_t grain, const F& fn) {
  detail::parallel_for(n, grain, fn);
}

// Byte order and bools for items [begin, end) of data read into memory we
// own.
void fix_items(uint8_t* data, int64_t begin, int64_t end, const NpyHeader& h,
               const npy::LoadOptions& o) {
  const size_t size = format::itemsize(h.dtype);
  uint8_t* p = data + static_cast<size_t>(begin) * size;
  const auto n = static_cast<uint64_t>(end - begin);
  if (h.byteswapped && o.to_native_byte_order) format::byteswap(p, n, h.dtype);
  if (h.dtype == DType::kBool) normalize_bools(p, n);
}

void finish_in_memory(at::Tensor& t, const NpyHeader& h,
                      const npy::LoadOptions& o) {
  if (h.nbytes) fix_items(static_cast<uint8_t*>(t.data_ptr()), 0, h.numel, h, o);
}

// Why the data at `offset` cannot be a view, or nullopt when it can.
std::optional<std::string> view_blocker(const NpyHeader& h, uint64_t offset,
                                        const npy::LoadOptions& o) {
  if (h.byteswapped && o.to_native_byte_order) {
    return std::string("the data is in ") +
           (format::native_little_endian() ? "big" : "little") +
           "-endian byte order, the other than this machine's, so it cannot "
           "be a view of the file";
  }
  const size_t align = format::itemsize(h.dtype);
  if (offset % align != 0) {
    return "the data starts at byte " + std::to_string(offset) +
           ", not a multiple of its " + std::to_string(align) +
           "-byte item size, so a view of it would be misaligned";
  }
  return std::nullopt;
}

// A tensor viewing `h`'s data at `offset` in the mapping; the mapping lives
// until the last such tensor's storage dies.
at::Tensor view_of(const std::shared_ptr<format::Mapping>& map, uint64_t offset,
                   const NpyHeader& h) {
  if (h.nbytes == 0) return allocate(h);
  uint8_t* data = map->mutable_data() + offset;
  if (h.dtype == DType::kBool) normalize_bools(data, h.nbytes);
  // TensorMaker owns the context from here on, even if make_tensor throws.
  auto* ctx = new std::shared_ptr<format::Mapping>(map);
  return at::for_blob(data, h.shape)
      .strides(strides_of(h))
      .context(ctx,
               [](void* c) {
                 delete static_cast<std::shared_ptr<format::Mapping>*>(c);
               })
      .options(at::TensorOptions(scalar_type(h.dtype)).device(at::kCPU))
      .make_tensor();
}

bool fortran_contiguous(const at::Tensor& t) {
  // numpy.save writes Fortran order for arrays that are F- but not
  // C-contiguous (numpy/lib/format.py, header_data_from_array_1_0).
  if (t.dim() < 2 || t.is_contiguous()) return false;
  std::vector<int64_t> rev(static_cast<size_t>(t.dim()));
  for (int64_t i = 0; i < t.dim(); ++i) rev[static_cast<size_t>(i)] = t.dim() - 1 - i;
  return t.permute(rev).is_contiguous();
}

// Throws TypeError unless `t`'s dtype has a NumPy dtype. `what` names the
// tensor in the message.
DType check_savable(const at::Tensor& t, const char* fn, const std::string& what) {
  detail::check_has_data(t, fn);
  const auto dt = npy_dtype(t.scalar_type());
  TORCH_CHECK_TYPE(
      dt.has_value(), fn, ": ", what, " is ", dtype_name(t.scalar_type()),
      ", which NumPy has no dtype for, so a .npy file cannot hold it; convert "
      "it first: to float32 (exact for bfloat16 and float8), complex32 to "
      "complex64, quantized tensors with dequantize().");
  return *dt;
}

struct Prepared {
  std::string header;
  at::Tensor data;  // dense, C- or F-contiguous, on the CPU
  uint64_t nbytes = 0;
};

Prepared prepare(const at::Tensor& t, DType dt, const char* fn) {
  // The default target keeps every dtype NumPy has (check_savable ran).
  at::Tensor host = detail::to_host(t, HostOptions{}, fn);
  const bool fortran = fortran_contiguous(host);
  Prepared p;
  p.data = fortran ? host : host.contiguous();
  p.header = format::make_npy_header(dt, fortran, host.sizes().vec());
  p.nbytes = static_cast<uint64_t>(p.data.numel()) * format::itemsize(dt);
  return p;
}

}  // namespace

namespace npy {

// npy::load of a file already open (detail::load_file opens it once for
// tb.load); its errors name file.where().
static at::Tensor load_open(const format::FileSource& file, LoadOptions options) {
  const std::string& where = file.where();
  format::SourceStream in(file, 0);
  const NpyHeader h = format::read_npy_header(in, where);
  if (options.mmap) {
    if (auto why = view_blocker(h, h.data_offset, options)) {
      format::fail(where, "cannot load with mmap = true: " + *why +
                              "; pass mmap = false to load a copy" +
                              (h.byteswapped ? " (or to_native_byte_order = "
                                               "false to map the raw bytes)"
                                             : ""));
    }
    if (h.nbytes == 0) return allocate(h);
    return view_of(std::make_shared<format::Mapping>(file), h.data_offset, h);
  }
  at::Tensor t = allocate(h);
  if (h.nbytes == 0) return t;
  // Large files are read by several threads (pread is thread-safe), each
  // fixing byte order and bools in its part while it is still in cache:
  // the page faults and copies out of the page cache scale with the cores
  // (1 GiB: 270 ms on one thread, 144 ms on two).
  auto* data = static_cast<uint8_t*>(t.data_ptr());
  const size_t size = format::itemsize(h.dtype);
  in_parts(h.numel, static_cast<int64_t>((size_t{4} << 20) / size),
           [&](int64_t begin, int64_t end) {
             // Faulting the piece in first halves the cost of the faults
             // that read() would otherwise take page by page.
             detail::prefault(data + static_cast<size_t>(begin) * size,
                              static_cast<size_t>(end - begin) * size);
             file.read(h.data_offset + static_cast<uint64_t>(begin) * size,
                       data + static_cast<size_t>(begin) * size,
                       static_cast<size_t>(end - begin) * size, "the array data");
             fix_items(data, begin, end, h, options);
           });
  return t;
}

at::Tensor load(const std::string& path, LoadOptions options) {
  return npy::load_open(format::FileSource(path, format::api("npy::load", path)),
                        options);
}

void save(const std::string& path, const at::Tensor& tensor) {
  const std::string where = format::api("npy::save", path);
  const DType dt = check_savable(tensor, "npy::save", "the tensor");
  const Prepared p = prepare(tensor, dt, "npy::save");
  format::AtomicFile out(path, where);
  out.write(p.header.data(), p.header.size());
  if (p.nbytes) out.write(p.data.data_ptr(), p.nbytes);
  out.commit();
}

}  // namespace npy

namespace npz {

// npz::load of a file already open, as npy::load_open.
static Arrays load_open(const format::FileSource& file, npy::LoadOptions options) {
  const std::string& where = file.where();
  std::shared_ptr<format::Mapping> map;
  if (options.mmap && file.size() > 0) {
    map = std::make_shared<format::Mapping>(file);
  }
  const format::ByteSource& source =
      map ? static_cast<const format::ByteSource&>(*map) : file;
  const auto members = format::read_zip_directory(source);
  Arrays out;
  out.reserve(members.size());
  for (const auto& m : members) {
    const std::string mwhere = where + ", member " + format::quote(m.name);
    constexpr size_t kSuffix = 4;  // ".npy"
    if (m.name.size() < kSuffix ||
        m.name.compare(m.name.size() - kSuffix, kSuffix, ".npy") != 0) {
      format::fail(mwhere, "is not a .npy file (its name does not end in "
                           "\".npy\"); torchbridge reads archives of .npy "
                           "members, as numpy.savez writes them");
    }
    format::MemberStream in(source, m, mwhere);
    const NpyHeader h =
        format::read_npy_header(in, mwhere, format::DataFit::kExactly);
    const uint64_t offset = m.data_offset + h.data_offset;
    at::Tensor t;
    if (map && m.method == 0 && h.nbytes > 0 &&
        !view_blocker(h, offset, options)) {
      // The CRC-32 is of the file's bytes: checked over the mapping in place
      // (one pass, no copy) before view_of normalizes bools in it.
      in.skip(h.nbytes, "the array data");
      in.finish();
      t = view_of(map, offset, h);
    } else {
      t = allocate(h);
      if (h.nbytes) in.read(t.data_ptr(), h.nbytes, "the array data");
      in.finish();
      finish_in_memory(t, h, options);
    }
    out.emplace_back(m.name.substr(0, m.name.size() - kSuffix), std::move(t));
  }
  return out;
}

Arrays load(const std::string& path, npy::LoadOptions options) {
  return npz::load_open(format::FileSource(path, format::api("npz::load", path)),
                        options);
}

void save(const std::string& path, const Arrays& arrays, SaveOptions options) {
  const std::string where = format::api("npz::save", path);
  // Check everything before creating the file: a bad entry leaves no file.
  std::vector<DType> dtypes;
  dtypes.reserve(arrays.size());
  std::unordered_set<std::string> names;
  for (const auto& [name, tensor] : arrays) {
    const std::string label = "the array " + format::quote(name);
    TORCH_CHECK_VALUE(name.find('\0') == std::string::npos, "npz::save: ",
                      label, " has a NUL byte in its name; zip member names "
                      "cannot hold one.");
    TORCH_CHECK_VALUE(name.size() <= 0xFFFF - 4, "npz::save: the name ",
                      format::quote(name.substr(0, 40)), "... is ",
                      name.size(), " bytes; zip member names are at most "
                      "65531 bytes plus \".npy\".");
    TORCH_CHECK_VALUE(names.insert(name).second, "npz::save: ", label,
                      " appears twice; names in an archive must be unique.");
    dtypes.push_back(check_savable(tensor, "npz::save", label));
  }
  format::AtomicFile file(path, where);
  format::ZipWriter zip(file, where);
  for (size_t i = 0; i < arrays.size(); ++i) {
    const Prepared p = prepare(arrays[i].second, dtypes[i], "npz::save");
    zip.begin_member(arrays[i].first + ".npy", p.header.size() + p.nbytes,
                     options.compress);
    zip.write(p.header.data(), p.header.size());
    if (p.nbytes) zip.write(p.data.data_ptr(), p.nbytes);
    zip.end_member();
  }
  zip.finish();
  file.commit();
}

}  // namespace npz

Loaded load(const std::string& path, npy::LoadOptions options) {
  format::FileSource file(path, format::api("load", path));
  if (format::sniff(file) == format::FileKind::kZip) {
    return npz::load_open(
        format::FileSource(std::move(file), format::api("npz::load", path)), options);
  }
  return npy::load_open(
      format::FileSource(std::move(file), format::api("npy::load", path)), options);
}

}  // namespace torchbridge
