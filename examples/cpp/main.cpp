// A LibTorch program that uses torchbridge without Python: the float policy,
// to_host, the operators through the dispatcher, .npy/.npz files, and a raw
// buffer converted through ArrayView.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

int main() {
  // Data often arrives as float64; models want float32.
  at::Tensor x = at::arange(6, at::kDouble).reshape({2, 3});
  at::Tensor y = torchbridge::coerce(x);
  std::cout << "coerce: " << x.scalar_type() << " -> " << y.scalar_type()
            << "\n";

  // A bfloat16 activation that requires grad, to the host in a dtype NumPy
  // can hold: detached, float32, values exact.
  at::Tensor act = at::tensor({1.5, -2.0, 0.25}).to(at::kBFloat16).requires_grad_();
  at::Tensor host = torchbridge::to_host(act);
  std::cout << "to_host: " << act.scalar_type() << " -> " << host.scalar_type()
            << ", requires_grad=" << host.requires_grad() << "\n";

  // The registered operator, found by the dispatcher: always a new tensor.
  at::Tensor z = torchbridge::ops::coerce(x, at::kHalf);

  // .npy files NumPy reads (np.load), loaded back as a zero-copy mapping;
  // .npz archives keep their members' order.
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string npy_path = dir + "/torchbridge_example_" + std::to_string(::getpid()) + ".npy";
  const std::string npz_path = dir + "/torchbridge_example_" + std::to_string(::getpid()) + ".npz";
  torchbridge::npy::save(npy_path, y);
  at::Tensor mapped = torchbridge::npy::load(npy_path, {.mmap = true});
  torchbridge::npz::save(npz_path, {{"y", y}, {"z", z}}, {.compress = true});
  const torchbridge::npz::Arrays arrays = torchbridge::npz::load(npz_path);
  std::cout << "npy: " << mapped.sizes() << " " << mapped.scalar_type()
            << ", npz: " << arrays.size() << " arrays, first '" << arrays[0].first
            << "'\n";
  std::remove(npy_path.c_str());
  std::remove(npz_path.c_str());

  // A raw buffer (here a uint8 image, 2 x 4 pixels, RGB) with the sharing
  // rules of an ndarray: kept uint8 it is shared; as float32 it is a copy,
  // and the owner's release runs once, when the last user is done.
  static int released = 0;
  auto* pixels = new uint8_t[2 * 4 * 3];
  for (int i = 0; i < 24; ++i) pixels[i] = static_cast<uint8_t>(i);
  auto image_view = [&] {
    torchbridge::ArrayView v;
    v.data = pixels;
    v.shape = {2, 4, 3};
    v.strides = {12, 3, 1};
    v.dtype = {at::kByte, 1};
    return v;
  };
  torchbridge::ArrayView shared_view = image_view();
  shared_view.owner = torchbridge::BufferOwner(pixels, [](void* p) {
    delete[] static_cast<uint8_t*>(p);
    ++released;
  });
  at::Tensor img_f = torchbridge::to_tensor(image_view(), {.dtype = at::kFloat});
  at::Tensor img = torchbridge::to_tensor(std::move(shared_view));
  const bool image_ok = img.data_ptr() == static_cast<void*>(pixels) &&
                        img.sizes() == at::IntArrayRef({2, 4, 3}) &&
                        img_f.scalar_type() == at::kFloat &&
                        at::equal(img_f, img.to(at::kFloat)) && released == 0;
  img.reset();
  std::cout << "ArrayView: shared uint8 image, float32 copy, owner released "
            << released << " time(s)\n";

  const bool ok = image_ok && released == 1 && y.scalar_type() == at::kFloat &&
                  at::equal(y, x.to(at::kFloat)) &&
                  host.scalar_type() == at::kFloat && !host.requires_grad() &&
                  host[1].item<float>() == -2.0f &&
                  z.scalar_type() == at::kHalf && !z.is_alias_of(x) &&
                  at::equal(mapped, y) && arrays.size() == 2 &&
                  arrays[0].first == "y" && at::equal(arrays[1].second, z);
  std::cout << (ok ? "ok" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
