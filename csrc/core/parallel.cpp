// parallel_for on a pool of our own threads, parallel_compute on torch's
// when cores are free (see parallel.h for when each). Helpers are plain pthreads that never touch Python; the pool is
// created on first use, never destroyed (a process exit may come while a
// helper sleeps on its condition variable, so it must stay valid), and
// recreated in a forked child (DataLoader workers fork the main process,
// whose helpers do not exist in the child).

#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <fcntl.h>
#include <link.h>
#include <sched.h>
#endif

namespace torchbridge::detail {
namespace {

// ---- OpenMP team size of the calling thread (SerialAten) ----------------
//
// torch's OpenMP runtime is already loaded; this library links none, so its
// two functions are looked up at run time (torch wheels ship libgomp under
// a hashed name, so look in every loaded object, not just the global scope).
using GetFn = int (*)();
using SetFn = void (*)(int);
struct OmpFns {
  GetFn get = nullptr;
  SetFn set = nullptr;
};

#if defined(__linux__)
int find_omp(struct dl_phdr_info* info, size_t, void* out) {
  auto* fns = static_cast<OmpFns*>(out);
  const char* name = info->dlpi_name;
  if (!name || !std::strstr(name, "omp")) return 0;
  void* h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return 0;
  auto get = reinterpret_cast<GetFn>(dlsym(h, "omp_get_max_threads"));
  auto set = reinterpret_cast<SetFn>(dlsym(h, "omp_set_num_threads"));
  dlclose(h);  // RTLD_NOLOAD took a reference; the object stays loaded
  if (!get || !set) return 0;
  fns->get = get;
  fns->set = set;
  return 1;
}
#endif

const OmpFns& omp() {
  static const OmpFns fns = [] {
    OmpFns f;
#if defined(__linux__) || defined(__APPLE__)
    f.get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    f.set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (f.get && f.set) return f;
    f = OmpFns{};
#endif
#if defined(__linux__)
    dl_iterate_phdr(find_omp, &f);
#endif
    return f;
  }();
  return fns;
}

// ---- how many threads can run now --------------------------------------

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int cores() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

// The most threads any job may use: the cores this process may run on,
// capped by torch.set_num_threads.
int thread_cap() {
  return std::max(1, std::min(cores(), at::get_num_threads()));
}

// Runnable threads on the machine, this one included (the fourth field of
// /proc/loadavg, "running/total"), or -1 when it cannot be read.
int runnable_now() {
#if defined(__linux__)
  // One descriptor for the process (re-read with pread: procfs regenerates
  // the text at offset 0); a forked child shares it, which is harmless.
  static const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[128];
  const ssize_t got = pread(fd, buf, sizeof(buf) - 1, 0);
  if (got <= 0) return -1;
  buf[got] = '\0';
  // "0.52 0.58 0.59 3/1840 12345": the number after the third space.
  const char* p = buf;
  for (int spaces = 0; *p && spaces < 3; ++p) spaces += (*p == ' ');
  int running = 0;
  bool any = false;
  for (; *p >= '0' && *p <= '9'; ++p) {
    running = running * 10 + (*p - '0');
    any = true;
  }
  return any && *p == '/' ? running : -1;
#else
  return -1;
#endif
}

// How long a reading of usable_threads() stands. Each reading costs two
// system calls, and on a busy machine a system call is where a thread whose
// timeslice is spent gets descheduled: reading every millisecond put those
// waits inside our calls instead of between them.
constexpr int64_t kRereadNs = 5000000;
// Shortest window over which the process's CPU rate is measured: 20 ms
// (shorter ones read 1 or 5: the kernel adds other threads' time to the
// process clock only at scheduler ticks), 100 ms while more threads are
// runnable than there are cores (see usable_threads for why).
constexpr int64_t kCpuWindowNs = 20000000;
constexpr int64_t kCpuWindowContendedNs = 100000000;
// Pieces from which work goes wide even on a busy machine. A helper that
// runs may still be descheduled mid-piece, costing the caller a timeslice
// (~3 ms), so only jobs several timeslices long: casts from 64 pieces of
// 128 KB (8 MB of output: at 1M float64 elements, 4 MB, one thread matched
// NumPy and two lost 1.0-1.3x; at 4M two won), reads from 16 pieces of 4 MB.
constexpr int64_t kWideOnBusyPieces = 16;
constexpr int64_t kWideOnBusyComputePieces = 64;
std::atomic<int64_t> g_usable_at{0};
std::atomic<int> g_usable{1};
std::atomic<int64_t> g_window_at{0};  // start of the CPU-rate window (ns)
std::atomic<int64_t> g_cpu_at{0};     // process CPU time then
std::atomic<int> g_rate{256};         // last window's CPU / wall, x 256
std::atomic<int> g_others_ema{0};  // other processes' runnable threads x 256

// fn over [0, n) in pieces of `grain`, in this thread, ATen single-threaded.
void run_inline(int64_t n, int64_t grain,
                const std::function<void(int64_t, int64_t)>& fn) {
  SerialAten serial;
  for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain));
}

// ---- the pool ------------------------------------------------------------

struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, grain = 1, pieces = 0;
  // Pieces not yet claimed: [front, back), packed as front << 32 | back.
  // The caller claims from the front and helpers from the back, so on two
  // cores each thread gets one contiguous half, as a static split would,
  // and a loop over the same data finds its half still in that core's L2.
  std::atomic<uint64_t> range{0};
  std::atomic<int64_t> finished{0};  // pieces claimed and done
  std::atomic<int> seats{0};         // helpers that may still join
  std::atomic<bool> failed{false};
  std::mutex m;
  std::condition_variable done;
  std::exception_ptr error;
};

// The next unclaimed piece from the front or the back, or -1.
int64_t claim(Job& j, bool front) {
  uint64_t r = j.range.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t f = r >> 32, b = r & 0xffffffffu;
    if (f >= b) return -1;
    const uint64_t next = front ? ((f + 1) << 32) | b : (f << 32) | (b - 1);
    if (j.range.compare_exchange_weak(r, next, std::memory_order_relaxed)) {
      return static_cast<int64_t>(front ? f : b - 1);
    }
  }
}

// Claims and runs pieces until none is left.
void work(Job& j, bool front) {
  SerialAten serial;
  for (;;) {
    const int64_t k = claim(j, front);
    if (k < 0) return;
    if (!j.failed.load(std::memory_order_relaxed)) {
      try {
        const int64_t b = k * j.grain;
        (*j.fn)(b, std::min(j.n, b + j.grain));
      } catch (...) {
        std::lock_guard<std::mutex> g(j.m);
        if (!j.error) j.error = std::current_exception();
        j.failed.store(true, std::memory_order_relaxed);
      }
    }
    if (j.finished.fetch_add(1, std::memory_order_acq_rel) + 1 == j.pieces) {
      std::lock_guard<std::mutex> g(j.m);
      j.done.notify_all();
    }
  }
}

struct Pool {
  std::mutex m;
  std::condition_variable wake;
  std::shared_ptr<Job> job;  // the job on offer, or null
  std::atomic<uint64_t> generation{0};  // bumped (under m) for each job offered
  std::atomic<int> awake{0};  // helpers spinning or working (not asleep)
  std::atomic<bool> busy{false};  // a caller owns the pool
  std::atomic<int> helpers{0};    // threads started
  int64_t retry_spawn_at = 0;     // after a failed creation (ns)
};

std::atomic<Pool*> g_pool{nullptr};
// Set in a forked child: libgomp's team of the parent does not exist there
// and its next parallel region hangs (plain torch too: .float() of a large
// tensor in a child forked after the parent used OpenMP never returns).
std::atomic<bool> g_forked{false};
std::atomic<bool> g_fail_spawn{false};

// After a job a helper polls for the next one this long before it sleeps:
// waking a sleeping thread costs 10-50 us on a VM, more than a whole job of
// a few hundred KB, and conversions often come back to back (a batch's
// arrays, a tight loop). OpenMP's workers do the same (GOMP_SPINCOUNT).
// Only helpers that just worked spin, and none are offered work on a busy
// machine, so a busy machine sees no spinning.
constexpr int64_t kSpinNs = 100000;

void* helper_main(void* arg) {
  auto* p = static_cast<Pool*>(arg);
  uint64_t seen = 0;
  for (;;) {
    // awake is 1 for this thread here: it just started or just worked.
    const int64_t until = now_ns() + kSpinNs;
    bool offered = false;
    while (!offered) {
      for (int i = 0; i < 16 && !offered; ++i) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        offered = p->generation.load(std::memory_order_acquire) != seen;
      }
      if (now_ns() > until) break;
    }
    std::shared_ptr<Job> j;
    {
      std::unique_lock<std::mutex> l(p->m);
      if (!offered) {
        p->awake.fetch_sub(1, std::memory_order_relaxed);
        p->wake.wait(l, [&] { return p->generation.load(std::memory_order_relaxed) != seen; });
        p->awake.fetch_add(1, std::memory_order_relaxed);
      }
      seen = p->generation.load(std::memory_order_relaxed);
      j = p->job;
    }
    if (j && j->seats.fetch_sub(1, std::memory_order_acq_rel) > 0) work(*j, false);
  }
  return nullptr;
}

void after_fork_in_child() {
  // The parent's helpers do not exist here, and its pool's mutex may have
  // been held by one of them: start over (the old pool is leaked on purpose).
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_forked.store(true, std::memory_order_relaxed);
  g_usable_at.store(0, std::memory_order_relaxed);
  g_window_at.store(0, std::memory_order_relaxed);
  g_rate.store(256, std::memory_order_relaxed);
  g_others_ema.store(0, std::memory_order_relaxed);
}

// Registered when the library loads: the child must learn of the fork even
// if the parent never started our pool (its casts ran on torch's).
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  auto* fresh = new Pool();
  if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;  // another thread won the race
  return p;
}

// Starts helpers until `want` exist; returns how many do. A failed creation
// (RLIMIT_NPROC, RLIMIT_AS, a container's pids limit) is not an error: the
// work runs on the threads there are, and creation is retried after a second.
int ensure_helpers(Pool* p, int want) {
  int have = p->helpers.load(std::memory_order_acquire);
  if (have >= want) return have;
  std::lock_guard<std::mutex> g(p->m);
  have = p->helpers.load(std::memory_order_relaxed);
  const int64_t t = now_ns();
  if (t < p->retry_spawn_at) return have;
  // Helpers must not take signals meant for the interpreter's main thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, size_t{1} << 20);  // ATen copies need little
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  while (have < want) {
    pthread_t th;
    if (g_fail_spawn.load(std::memory_order_relaxed) ||
        pthread_create(&th, &attr, helper_main, p) != 0) {
      p->retry_spawn_at = t + 1000000000;
      break;
    }
#if defined(__linux__)
    pthread_setname_np(th, "torchbridge");
#endif
    p->awake.fetch_add(1, std::memory_order_relaxed);
    p->helpers.store(++have, std::memory_order_release);
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return have;
}

}  // namespace

namespace {
void run_on_pool(int64_t n, int64_t grain, int threads,
                 const std::function<void(int64_t, int64_t)>& fn);
}  // namespace

SerialAten::SerialAten() : previous_(0) {
  const auto& f = omp();
  if (!f.get) return;
  // First let torch size this thread's team (its lazy per-thread
  // initialisation would otherwise undo ours on the first ATen call).
  (void)at::get_num_threads();
  previous_ = f.get();
  if (previous_ != 1) f.set(1);
}

SerialAten::~SerialAten() {
  if (previous_ > 1) omp().set(previous_);
}

int usable_threads() {
  const int64_t t = now_ns();
  const int64_t last = g_usable_at.load(std::memory_order_relaxed);
  if (t - last < kRereadNs) return g_usable.load(std::memory_order_relaxed);
  const int c = cores();
  const int cap = thread_cap();
  const int running = runnable_now();
  // Runnable threads of this process are not competition: this one, our
  // helpers, and torch's OpenMP workers, which spin for ~4 ms after each
  // parallel region (libgomp's default) and would otherwise read as a busy
  // machine right after any torch op. Their number is the process's CPU
  // time over wall time, measured over windows of 20 ms, and at least this
  // thread and the helpers awake now. While more threads are runnable than
  // there are cores the windows are 100 ms: reading the process clock makes
  // the kernel bring this thread's run time up to date, and when its
  // timeslice is spent and another thread waits for the core it is
  // descheduled right there, at the end of that system call, instead of at
  // the next tick, so each reading moved a stall that a later call would
  // have taken into ours. Read every 5 ms, it made 13-18% of our 1M float64
  // -> float32 calls on a busy 2-core machine stall against 8-14% of
  // NumPy's astype (astype with the same reading in it: 15-21%). On a
  // machine with a core for every runnable thread nothing waits, and the
  // short window follows torch's workers closely: read every 100 ms there,
  // a rate left from single-threaded work read the workers spinning after
  // torch's .float() as another process, and a 1M Arrow column converted
  // on one thread (1.6x from_dlpack(arr).float()).
  // One thread closes a window (threads calling at once would otherwise
  // pair one's clock reading with the other's start).
  int64_t w0 = g_window_at.load(std::memory_order_relaxed);
  if ((w0 == 0 || t - w0 >= (running > c ? kCpuWindowContendedNs : kCpuWindowNs)) &&
      g_window_at.compare_exchange_strong(w0, t, std::memory_order_acq_rel)) {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    const int64_t cpu = int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
    if (w0 != 0 && t - w0 <= 2000000000) {
      const int64_t used = cpu - g_cpu_at.load(std::memory_order_relaxed);
      g_rate.store(static_cast<int>(std::max<int64_t>(0, used) * 256 / (t - w0)),
                   std::memory_order_relaxed);
    } else if (w0 != 0) {
      // Stale (2 s and more since the last reading): what ran then says
      // nothing about now; count this thread alone until the window closes.
      g_rate.store(256, std::memory_order_relaxed);
    }
    g_cpu_at.store(cpu, std::memory_order_relaxed);
  }
  Pool* p = g_pool.load(std::memory_order_acquire);
  const int ours = std::max(1 + (p ? std::max(0, p->awake.load(std::memory_order_relaxed)) : 0),
                            (g_rate.load(std::memory_order_relaxed) + 128) / 256);
  // Runnable threads of other processes, smoothed over the last readings
  // (each at least 1 ms apart): one sample of /proc/loadavg often catches a
  // kernel thread or a short-lived process, and going single-threaded for
  // that blip costs a quiet machine half its speed; a machine whose cores
  // are all taken shows up in the first reading or two.
  const int others = running < 0 ? 0 : std::max(0, running - ours);
  const int ema = (g_others_ema.load(std::memory_order_relaxed) + others * 256) / 2;
  g_others_ema.store(ema, std::memory_order_relaxed);
  const int busy = (ema + 64) / 256;  // floor(ema + 0.25)
  const int usable = std::clamp(c - busy, 1, cap);
  g_usable.store(usable, std::memory_order_relaxed);
  g_usable_at.store(t, std::memory_order_relaxed);
  return usable;
}

void parallel_compute(int64_t n, int64_t grain,
                      const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int usable = n <= grain ? 1 : usable_threads();
  if (usable <= 1) {
    // A busy machine. Long jobs still go wide, on our pool (helpers that
    // start late find nothing to wait for): with the cores shared evenly
    // among runnable threads, more threads get the job more of the
    // machine (4M elements on 2 busy cores: 9.0 ms on one thread, 6.7 ms
    // for torch's two). Shorter ones stay here: a helper that did start
    // could be descheduled mid-piece, for a timeslice as long as the job.
    if (n / grain >= kWideOnBusyComputePieces) {
      run_on_pool(n, grain, thread_cap(), fn);
      return;
    }
    run_inline(n, grain, fn);
    return;
  }
  if (!torch_pool_usable()) {  // a forked child: our pool is fork-safe
    run_on_pool(n, grain, usable, fn);
    return;
  }
  // An index carrier: a 1-d byte tensor of n elements at a fake address.
  // for_each hands each worker a range of it as a pointer and a count and
  // never dereferences it (the loop below only subtracts the base).
  static char base_byte;
  char* base = &base_byte;
  auto carrier = at::from_blob(base, {n}, at::TensorOptions().dtype(at::kByte));
  auto iter = at::TensorIteratorConfig()
                  .add_output(carrier)
                  .check_all_same_dtype(false)
                  .resize_outputs(false)
                  .build();
  iter.for_each(
      [&](char** data, const int64_t* strides, int64_t size0, int64_t size1) {
        // One contiguous 1-d operand: size1 is 1 and the stride one byte.
        for (int64_t j = 0; j < size1; ++j) {
          const int64_t b = (data[0] + j * strides[1]) - base;
          for (int64_t k = 0; k < size0; k += grain) {
            fn(b + k, b + std::min(size0, k + grain));
          }
        }
      },
      grain);
}

bool torch_pool_usable() {
  return !g_forked.load(std::memory_order_relaxed);
}

int helper_threads() {
  Pool* p = pool();
  return ensure_helpers(p, cores() - 1);
}

void set_fail_thread_creation(bool fail) {
  g_fail_spawn.store(fail, std::memory_order_relaxed);
}

void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t pieces = (n + grain - 1) / grain;
  int threads = pieces > 1 ? usable_threads() : 1;
  // Long jobs go wide even on a busy machine (see parallel_compute).
  if (threads == 1 && pieces >= kWideOnBusyPieces) {
    threads = thread_cap();
  }
  run_on_pool(n, grain, threads, fn);
}

namespace {
void run_on_pool(int64_t n, int64_t grain, int threads,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  // At most 2^31 pieces (the claim counters are 32-bit).
  grain = std::max<int64_t>({grain, 1, n >> 31});
  const int64_t pieces = (n + grain - 1) / grain;
  if (pieces <= 1) threads = 1;
  Pool* p = threads > 1 ? pool() : nullptr;
  // One job at a time: a second caller (another Python thread, or a piece
  // calling back in) runs its work inline rather than queue behind it.
  if (p && p->busy.exchange(true, std::memory_order_acq_rel)) p = nullptr;
  if (p) {
    threads = 1 + std::min<int>(ensure_helpers(p, threads - 1), threads - 1);
    if (threads == 1) p->busy.store(false, std::memory_order_release);
  }
  if (!p || threads == 1) {
    run_inline(n, grain, fn);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->grain = grain;
  job->pieces = pieces;
  job->range.store(static_cast<uint64_t>(pieces), std::memory_order_relaxed);
  job->seats.store(static_cast<int>(std::min<int64_t>(threads - 1, pieces - 1)),
                   std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(p->m);
    p->job = job;
    p->generation.fetch_add(1, std::memory_order_release);
  }
  for (int i = 1; i < threads; ++i) p->wake.notify_one();
  work(*job, true);
  // Every piece is claimed now; wait only for those a helper is running.
  // They are short (one piece each), so spin briefly before sleeping.
  for (int spin = 0; spin < 1000 &&
       job->finished.load(std::memory_order_acquire) != pieces; ++spin) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  if (job->finished.load(std::memory_order_acquire) != pieces) {
    std::unique_lock<std::mutex> l(job->m);
    job->done.wait(l, [&] {
      return job->finished.load(std::memory_order_acquire) == pieces;
    });
  }
  {
    std::lock_guard<std::mutex> g(p->m);
    p->job.reset();  // a helper waking late holds its own reference
  }
  p->busy.store(false, std::memory_order_release);
  if (job->error) std::rethrow_exception(job->error);
}
}  // namespace

}  // namespace torchbridge::detail
