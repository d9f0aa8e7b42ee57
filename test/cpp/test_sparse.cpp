// torchbridge::SparseView -> torch sparse tensors: validation (each check
// and its message), what is shared and what is copied, canonicalisation,
// COO's coalesced flag, owner lifetimes; buffers built by hand (no SciPy).

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using torchbridge::ArrayView;
using torchbridge::BufferOwner;
using torchbridge::CoerceOptions;
using torchbridge::ElementType;
using torchbridge::SparseView;
using torchbridge::to_tensor;

template <class T>
ArrayView view_of(std::vector<T>& v, at::ScalarType t) {
  ArrayView a;
  a.data = v.data();
  a.shape = {static_cast<int64_t>(v.size())};
  a.strides = {static_cast<int64_t>(sizeof(T))};
  a.dtype = ElementType{t, static_cast<int64_t>(sizeof(T)), false, nullptr};
  return a;
}

struct Csr {
  std::vector<int32_t> indptr, indices;
  std::vector<float> data;
  int64_t rows, cols;
  SparseView view(at::Layout layout = at::kSparseCsr) {
    SparseView v;
    v.layout = layout;
    v.shape = {rows, cols};
    v.indices.push_back(view_of(indptr, at::kInt));
    v.indices.push_back(view_of(indices, at::kInt));
    v.values = view_of(data, at::kFloat);
    return v;
  }
};

// [[1, 0, 2], [0, 0, 3]]
Csr sample() { return {{0, 2, 3}, {0, 2, 2}, {1.f, 2.f, 3.f}, 2, 3}; }

std::vector<float> dense(const at::Tensor& t) {
  auto d = t.to_dense().contiguous();
  return std::vector<float>(d.data_ptr<float>(), d.data_ptr<float>() + d.numel());
}

TEST(Sparse, CsrSharesAllThreeBuffers) {
  auto m = sample();
  auto t = to_tensor(m.view());
  EXPECT_EQ(t.layout(), at::kSparseCsr);
  EXPECT_EQ(t.crow_indices().data_ptr(), m.indptr.data());
  EXPECT_EQ(t.col_indices().data_ptr(), m.indices.data());
  EXPECT_EQ(t.values().data_ptr(), m.data.data());
  EXPECT_EQ(dense(t), (std::vector<float>{1, 0, 2, 0, 0, 3}));
}

TEST(Sparse, CscReadsColumns) {
  // The same arrays as CSC of shape (3, 2): column 0 holds rows 0 and 2.
  auto m = sample();
  std::swap(m.rows, m.cols);
  auto t = to_tensor(m.view(at::kSparseCsc));
  EXPECT_EQ(t.layout(), at::kSparseCsc);
  EXPECT_EQ(dense(t), (std::vector<float>{1, 0, 0, 0, 2, 3}));
}

TEST(Sparse, CopyTrueCopiesEverything) {
  auto m = sample();
  CoerceOptions o;
  o.copy = true;
  auto t = to_tensor(m.view(), o);
  EXPECT_NE(t.crow_indices().data_ptr(), m.indptr.data());
  EXPECT_NE(t.col_indices().data_ptr(), m.indices.data());
  EXPECT_NE(t.values().data_ptr(), m.data.data());
  EXPECT_EQ(dense(t), (std::vector<float>{1, 0, 2, 0, 0, 3}));
}

TEST(Sparse, MixedIndexTypesWidenToInt64) {
  auto m = sample();
  std::vector<int64_t> ptr64{0, 2, 3};
  auto v = m.view();
  v.indices[0] = view_of(ptr64, at::kLong);
  auto t = to_tensor(std::move(v));
  EXPECT_EQ(t.crow_indices().scalar_type(), at::kLong);
  EXPECT_EQ(t.col_indices().scalar_type(), at::kLong);
  EXPECT_EQ(t.crow_indices().data_ptr(), ptr64.data());
  EXPECT_NE(t.col_indices().data_ptr(), m.indices.data());
  CoerceOptions o;
  o.copy = false;
  auto v2 = m.view();
  v2.indices[0] = view_of(ptr64, at::kLong);
  EXPECT_THROW_MSG(to_tensor(std::move(v2), o), c10::ValueError,
                   "the CSR matrix's indices cannot be shared because its dtype int32 "
                   "becomes int64");
}

TEST(Sparse, MalformedIndptrAndIndicesNameTheCheck) {
  struct Case {
    Csr m;
    const char* msg;
  };
  std::vector<Case> cases = {
      {{{1, 2, 3}, {0, 2, 2}, {1, 2, 3}, 2, 3}, "indptr starts at 1, but indptr[0] must be 0"},
      {{{0, 3, 2}, {0, 2, 2}, {1, 2, 3}, 2, 3}, "indptr decreases: indptr[1] = 3 > indptr[2] = 2"},
      {{{0, 2, 4}, {0, 2, 2}, {1, 2, 3}, 2, 3}, "indptr ends at 4"},
      {{{0, 2}, {0, 2, 2}, {1, 2, 3}, 2, 3}, "indptr has 2 entries, but its 2 rows need 3"},
      {{{0, 2, 3}, {0, 2, 5}, {1, 2, 3}, 2, 3},
       "indices[2] = 5 is out of range for its 3 columns"},
      {{{0, 2, 3}, {0, 2}, {1, 2, 3}, 2, 3}, "has 2 indices but 3 values"},
  };
  for (auto& c : cases) {
    EXPECT_THROW_MSG(to_tensor(c.m.view()), c10::ValueError, c.msg);
    EXPECT_THROW_MSG(to_tensor(c.m.view()), c10::ValueError, "the matrix is malformed");
  }
}

TEST(Sparse, NonCanonicalIsSummedInACopyOrRefused) {
  // Row 0 holds column 2 twice and column 0 after it.
  Csr m{{0, 3, 3}, {2, 0, 2}, {1.f, 2.f, 3.f}, 2, 3};
  auto t = to_tensor(m.view());
  EXPECT_EQ(dense(t), (std::vector<float>{2, 0, 4, 0, 0, 0}));
  auto cols = t.col_indices();
  EXPECT_EQ(cols.numel(), 2);
  EXPECT_EQ(cols[0].item<int32_t>(), 0);
  EXPECT_EQ(cols[1].item<int32_t>(), 2);
  EXPECT_EQ(m.indices, (std::vector<int32_t>{2, 0, 2}));  // input untouched
  CoerceOptions o;
  o.copy = false;
  EXPECT_THROW_MSG(to_tensor(m.view(), o), c10::ValueError,
                   "the CSR matrix is not in canonical form");
}

TEST(Sparse, SpareCapacityPastIndptrEndIsIgnored) {
  Csr m{{0, 1, 2}, {0, 1, 2}, {1.f, 2.f, 9.f}, 2, 3};  // 3 stored, 2 used
  auto t = to_tensor(m.view());
  EXPECT_EQ(t._nnz(), 2);
  EXPECT_EQ(t.values().data_ptr(), m.data.data());
  EXPECT_EQ(dense(t), (std::vector<float>{1, 0, 0, 0, 2, 0}));
}

TEST(Sparse, CooCopiesIndicesAndSetsCoalescedOnlyWhenTrue) {
  std::vector<int64_t> row{0, 1, 1}, col{2, 0, 1};
  std::vector<float> data{1, 2, 3};
  SparseView v;
  v.layout = at::kSparse;
  v.shape = {2, 3};
  v.indices.push_back(view_of(row, at::kLong));
  v.indices.push_back(view_of(col, at::kLong));
  v.values = view_of(data, at::kFloat);
  auto t = to_tensor(std::move(v));
  EXPECT_TRUE(t.is_coalesced());
  EXPECT_EQ(t._values().data_ptr(), data.data());
  EXPECT_EQ(dense(t), (std::vector<float>{0, 0, 1, 2, 3, 0}));

  std::vector<int32_t> row2{1, 0, 1}, col2{0, 0, 0};
  SparseView u;
  u.layout = at::kSparse;
  u.shape = {2, 1};
  u.indices.push_back(view_of(row2, at::kInt));
  u.indices.push_back(view_of(col2, at::kInt));
  u.values = view_of(data, at::kFloat);
  auto t2 = to_tensor(std::move(u));
  EXPECT_FALSE(t2.is_coalesced());
  EXPECT_EQ(dense(t2), (std::vector<float>{2, 4}));

  std::vector<int64_t> bad{0, 3, 1};
  SparseView w;
  w.layout = at::kSparse;
  w.shape = {2, 3};
  w.indices.push_back(view_of(bad, at::kLong));
  w.indices.push_back(view_of(col, at::kLong));
  w.values = view_of(data, at::kFloat);
  EXPECT_THROW_MSG(to_tensor(std::move(w)), c10::ValueError,
                   "the COO matrix's row[1] = 3 is out of range for dimension 0 of extent 2");
}

TEST(Sparse, FloatPolicyAppliesToValues) {
  std::vector<int32_t> indptr{0, 1}, indices{0};
  std::vector<double> data{1.5};
  SparseView v;
  v.shape = {1, 1};
  v.indices.push_back(view_of(indptr, at::kInt));
  v.indices.push_back(view_of(indices, at::kInt));
  v.values = view_of(data, at::kDouble);
  auto t = to_tensor(std::move(v));
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  EXPECT_EQ(t.crow_indices().data_ptr(), indptr.data());
}

TEST(Sparse, FloatIndicesAreATypeError) {
  auto m = sample();
  std::vector<float> findices{0, 2, 2};
  auto v = m.view();
  v.indices[1] = view_of(findices, at::kFloat);
  EXPECT_THROW_MSG(to_tensor(std::move(v)), c10::TypeError,
                   "the CSR matrix's indices are float32, but indices must be integers");
}

int releases = 0;
void count_release(void*) { ++releases; }

TEST(Sparse, OwnersReleasedOnceWhenTheTensorDies) {
  releases = 0;
  auto m = sample();
  {
    auto v = m.view();
    v.values.owner = BufferOwner(&releases, &count_release);
    v.indices[0].owner = BufferOwner(&releases, &count_release);
    auto t = to_tensor(std::move(v));
    EXPECT_EQ(releases, 0);  // the tensor holds them
  }
  EXPECT_EQ(releases, 2);
  // A malformed view releases its owners once too.
  releases = 0;
  Csr bad{{1, 2, 3}, {0, 2, 2}, {1, 2, 3}, 2, 3};
  {
    auto v = bad.view();
    v.values.owner = BufferOwner(&releases, &count_release);
    EXPECT_THROW(to_tensor(std::move(v)), c10::ValueError);
  }
  EXPECT_EQ(releases, 1);
}

TEST(Sparse, DensifyRefusesWhatCannotFit) {
  auto idx = at::zeros({2, 1}, at::kLong);
  auto t = at::sparse_coo_tensor(idx, at::ones({1}), {int64_t{10000000}, int64_t{10000000}});
  EXPECT_THROW_MSG(torchbridge::to_host(t), c10::OutOfMemoryError,
                   "needs 400.0 TB (400000000000000 bytes), more than this machine's");
  EXPECT_THROW_MSG(torchbridge::to_host(t), c10::OutOfMemoryError, "torchbridge.to_scipy");
}

}  // namespace
