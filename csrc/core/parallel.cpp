// parallel_for on a pool of our own threads: see parallel.h for why not
// torch's. Helpers are plain pthreads that never touch Python; the pool is
// created on first use, never destroyed (a process exit may come while a
// helper sleeps on its condition variable, so it must stay valid), and
// recreated in a forked child (DataLoader workers fork the main process,
// whose helpers do not exist in the child).

#include "parallel.h"

#include <ATen/Parallel.h>

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

std::atomic<int64_t> g_usable_at{0};
std::atomic<int> g_usable{1};

// ---- the pool ------------------------------------------------------------

struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, grain = 1, pieces = 0;
  std::atomic<int64_t> next{0};      // the next piece to claim
  std::atomic<int64_t> finished{0};  // pieces claimed and done
  std::atomic<int> seats{0};         // helpers that may still join
  std::atomic<bool> failed{false};
  std::mutex m;
  std::condition_variable done;
  std::exception_ptr error;
};

// Claims and runs pieces until none is left.
void work(Job& j) {
  SerialAten serial;
  for (;;) {
    const int64_t k = j.next.fetch_add(1, std::memory_order_relaxed);
    if (k >= j.pieces) return;
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
  uint64_t generation = 0;   // bumped for each job offered
  std::atomic<bool> busy{false};  // a caller owns the pool
  std::atomic<int> helpers{0};    // threads started
  int64_t retry_spawn_at = 0;     // after a failed creation (ns)
};

std::atomic<Pool*> g_pool{nullptr};
std::atomic<bool> g_fail_spawn{false};

void* helper_main(void* arg) {
  auto* p = static_cast<Pool*>(arg);
  uint64_t seen = 0;
  for (;;) {
    std::shared_ptr<Job> j;
    {
      std::unique_lock<std::mutex> l(p->m);
      p->wake.wait(l, [&] { return p->generation != seen; });
      seen = p->generation;
      j = p->job;
    }
    if (j && j->seats.fetch_sub(1, std::memory_order_acq_rel) > 0) work(*j);
  }
  return nullptr;
}

void after_fork_in_child() {
  // The parent's helpers do not exist here, and its pool's mutex may have
  // been held by one of them: start over (the old pool is leaked on purpose).
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_usable_at.store(0, std::memory_order_relaxed);
}

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  static std::once_flag atfork;
  std::call_once(atfork, [] { pthread_atfork(nullptr, nullptr, after_fork_in_child); });
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
    p->helpers.store(++have, std::memory_order_release);
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return have;
}

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
  if (t - g_usable_at.load(std::memory_order_relaxed) < 1000000) {
    return g_usable.load(std::memory_order_relaxed);
  }
  const int c = cores();
  const int cap = std::max(1, std::min(c, at::get_num_threads()));
  const int running = runnable_now();
  // Cores not taken by another runnable thread (this one is running).
  const int free_cores = running < 0 ? c : c - (running - 1);
  const int usable = std::clamp(free_cores, 1, cap);
  g_usable.store(usable, std::memory_order_relaxed);
  g_usable_at.store(t, std::memory_order_relaxed);
  return usable;
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
  Pool* p = threads > 1 ? pool() : nullptr;
  // One job at a time: a second caller (another Python thread, or a piece
  // calling back in) runs its work inline rather than queue behind it.
  if (p && p->busy.exchange(true, std::memory_order_acq_rel)) p = nullptr;
  if (p) {
    threads = 1 + std::min<int>(ensure_helpers(p, threads - 1), threads - 1);
    if (threads == 1) p->busy.store(false, std::memory_order_release);
  }
  if (!p || threads == 1) {
    SerialAten serial;
    for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain));
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->grain = grain;
  job->pieces = pieces;
  job->seats.store(static_cast<int>(std::min<int64_t>(threads - 1, pieces - 1)),
                   std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(p->m);
    p->job = job;
    ++p->generation;
  }
  for (int i = 1; i < threads; ++i) p->wake.notify_one();
  work(*job);
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

}  // namespace torchbridge::detail
