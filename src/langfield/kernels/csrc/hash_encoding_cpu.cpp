// Multiresolution hash encoding (Mueller et al. 2022, "Instant Neural Graphics Primitives",
// Sec. 3) -- CPU kernels, forward and backward, parallelised with at::parallel_for.
//
// Semantics match langfield/ops/reference/hash_encoding.py exactly (NaN coordinates, which the
// reference propagates, are read as 0 here rather than indexing out of bounds):
//   * x is clamped to [0, 1]; per level l with resolution N_l: pos = x * N_l,
//     p0 = min(floor(pos), N_l - 1), w = pos - p0 (so x == 1 lands on vertex N_l with weight 1).
//   * dense levels ((N_l+1)^3 <= T): index = i + j (N_l+1) + k (N_l+1)^2;
//     hashed levels: index = (i * 1 xor j * 2654435761 xor k * 805459861) mod T   (NGP eq. 4),
//     computed in uint32 with wraparound; T is a power of two so "mod T" is "& (T - 1)".
//   * corner c has bit 0 = +x, bit 1 = +y, bit 2 = +z; weight = wx * wy * wz (trilinear).
//
// Layout: x [N, 3], embeddings [T_total, F] (levels concatenated, level l starts at offsets[l]),
// output [N, L * F] (points-major, level l occupies columns l*F .. l*F+F-1).
//
// Parallelisation:
//   * forward and the input gradient split the points over threads (points are independent);
//   * the table gradient runs over *levels*: level tables are disjoint, so each thread owns
//     whole levels and accumulates without atomics. Levels are dealt to threads round-robin so
//     the cheap, cache-resident dense levels are spread evenly.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int64_t kPointGrain = 1024;  // min points per parallel task

// Ask Linux for transparent huge pages on the 2 MiB-aligned interior of a large, not yet touched
// buffer (THP is usually in "madvise" mode). First-touch of a fresh 48 MiB gradient table drops
// from ~30 ms (12k page faults) to ~7 ms, and random gathers/scatters miss the TLB less.
void advise_huge_pages(void* ptr, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // best effort
#else
  (void)ptr;
  (void)bytes;
#endif
}

at::Tensor empty_huge(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

template <typename scalar_t>
struct Level {
  scalar_t scale;    // N_l as a float
  scalar_t max_p0;   // N_l - 1
  uint32_t mask;     // T - 1 (hashed levels)
  uint32_t stride1;  // N_l + 1 (dense levels)
  uint32_t stride2;  // (N_l + 1)^2 (dense levels)
  bool dense;
  int64_t offset;    // first table row of the level
};

template <typename scalar_t>
std::vector<Level<scalar_t>> make_levels(at::IntArrayRef resolutions, at::IntArrayRef offsets,
                                         at::IntArrayRef dense, int64_t hashmap_size) {
  TORCH_CHECK(resolutions.size() == dense.size(), "resolutions and dense must have equal length");
  TORCH_CHECK(offsets.size() == resolutions.size() + 1, "offsets must have length L + 1");
  TORCH_CHECK(offsets.back() < (int64_t(1) << 31), "the table must have fewer than 2^31 rows");
  TORCH_CHECK(hashmap_size >= 1 && hashmap_size <= (int64_t(1) << 31) && (hashmap_size & (hashmap_size - 1)) == 0,
              "hashmap_size must be a power of two <= 2^31");
  std::vector<Level<scalar_t>> levels(resolutions.size());
  for (size_t l = 0; l < resolutions.size(); ++l) {
    const int64_t r = resolutions[l];
    TORCH_CHECK(r >= 1, "resolution must be >= 1");
    Level<scalar_t>& lv = levels[l];
    lv.scale = static_cast<scalar_t>(r);
    lv.max_p0 = static_cast<scalar_t>(r - 1);
    lv.mask = static_cast<uint32_t>(hashmap_size - 1);
    lv.stride1 = static_cast<uint32_t>(r + 1);
    lv.stride2 = static_cast<uint32_t>((r + 1) * (r + 1));
    lv.dense = dense[l] != 0;
    lv.offset = offsets[l];
  }
  return levels;
}

// Memory access pattern and vectorisation (what the speed hinges on; measured on a 2-core EPYC):
//   * every loop is level-major: a thread finishes one level for its points before the next, so
//     the working set is one level table (<= T * F values, 4 MiB by default) instead of all of
//     them (48 MiB), which keeps it in L3 and within TLB reach;
//   * points go in chunks of kChunk, structure-of-arrays: cell location, corner rows and weights
//     are computed for the whole chunk in loops the compiler vectorises (across points), the
//     rows are prefetched, and only then are the features gathered/scattered, so many cache
//     misses are in flight at once instead of one point's 8 after another's.
constexpr int kChunk = 32;

// Clamped coordinates of a thread's points, structure-of-arrays: xs[d * count + i].
template <typename scalar_t>
std::vector<scalar_t> clamped_soa(const scalar_t* x, int64_t begin, int64_t end) {
  const int64_t count = end - begin;
  std::vector<scalar_t> xs(static_cast<size_t>(3 * count));
  for (int64_t i = 0; i < count; ++i) {
    for (int d = 0; d < 3; ++d) {
      // NaN-safe clamp (NaN -> 0): a NaN cast to int would index outside the table.
      const scalar_t v = x[3 * (begin + i) + d];
      xs[d * count + i] = v > scalar_t(0) ? (v < scalar_t(1) ? v : scalar_t(1)) : scalar_t(0);
    }
  }
  return xs;
}

// Corner rows and trilinear weights of up to kChunk points in one level.
template <typename scalar_t>
struct Chunk {
  alignas(64) scalar_t w[3][2][kChunk];  // per axis: (1 - f, f)
  alignas(64) scalar_t cw[8][kChunk];    // corner weights, corner k: bit0 = +x, bit1 = +y, bit2 = +z
  alignas(64) int32_t row[8][kChunk];    // absolute table rows (T_total < 2^31)
};

// xs: SoA clamped coordinates (stride `count` between axes), points [j0, j0 + m).
template <typename scalar_t>
inline void locate_chunk(const scalar_t* xs, int64_t count, int64_t j0, int m, const Level<scalar_t>& lv,
                         Chunk<scalar_t>& ch, const scalar_t* prefetch_base, int64_t F, bool for_write) {
  alignas(64) uint32_t cell[3][kChunk];
  const int32_t max_cell = static_cast<int32_t>(lv.max_p0);
  for (int d = 0; d < 3; ++d) {
    const scalar_t* xd = xs + d * count + j0;
    for (int j = 0; j < m; ++j) {
      const scalar_t pos = xd[j] * lv.scale;
      // pos >= 0, so truncation is floor; the last vertex row is folded into the last cell
      int32_t p0 = static_cast<int32_t>(pos);
      p0 = p0 < max_cell ? p0 : max_cell;
      const scalar_t f = pos - static_cast<scalar_t>(p0);
      ch.w[d][0][j] = scalar_t(1) - f;
      ch.w[d][1][j] = f;
      cell[d][j] = static_cast<uint32_t>(p0);
    }
  }
  const uint32_t off = static_cast<uint32_t>(lv.offset);
  if (lv.dense) {
    const uint32_t s1 = lv.stride1, s2 = lv.stride2;
    for (int j = 0; j < m; ++j) {
      const uint32_t a0 = cell[0][j] + off, a1 = a0 + 1;
      const uint32_t b0 = cell[1][j] * s1, b1 = b0 + s1;
      const uint32_t c0 = cell[2][j] * s2, c1 = c0 + s2;
      ch.row[0][j] = static_cast<int32_t>(a0 + b0 + c0);
      ch.row[1][j] = static_cast<int32_t>(a1 + b0 + c0);
      ch.row[2][j] = static_cast<int32_t>(a0 + b1 + c0);
      ch.row[3][j] = static_cast<int32_t>(a1 + b1 + c0);
      ch.row[4][j] = static_cast<int32_t>(a0 + b0 + c1);
      ch.row[5][j] = static_cast<int32_t>(a1 + b0 + c1);
      ch.row[6][j] = static_cast<int32_t>(a0 + b1 + c1);
      ch.row[7][j] = static_cast<int32_t>(a1 + b1 + c1);
    }
  } else {
    const uint32_t mask = lv.mask;
    for (int j = 0; j < m; ++j) {
      const uint32_t a0 = cell[0][j], a1 = a0 + 1;
      const uint32_t b0 = cell[1][j] * kPrime1, b1 = b0 + kPrime1;  // uint32: wraps like NGP
      const uint32_t c0 = cell[2][j] * kPrime2, c1 = c0 + kPrime2;
      ch.row[0][j] = static_cast<int32_t>(((a0 ^ b0 ^ c0) & mask) + off);
      ch.row[1][j] = static_cast<int32_t>(((a1 ^ b0 ^ c0) & mask) + off);
      ch.row[2][j] = static_cast<int32_t>(((a0 ^ b1 ^ c0) & mask) + off);
      ch.row[3][j] = static_cast<int32_t>(((a1 ^ b1 ^ c0) & mask) + off);
      ch.row[4][j] = static_cast<int32_t>(((a0 ^ b0 ^ c1) & mask) + off);
      ch.row[5][j] = static_cast<int32_t>(((a1 ^ b0 ^ c1) & mask) + off);
      ch.row[6][j] = static_cast<int32_t>(((a0 ^ b1 ^ c1) & mask) + off);
      ch.row[7][j] = static_cast<int32_t>(((a1 ^ b1 ^ c1) & mask) + off);
    }
  }
  if (prefetch_base != nullptr) {
    for (int k = 0; k < 8; ++k) {
      for (int j = 0; j < m; ++j) {
        if (for_write) {
          __builtin_prefetch(prefetch_base + static_cast<int64_t>(ch.row[k][j]) * F, 1);
        } else {
          __builtin_prefetch(prefetch_base + static_cast<int64_t>(ch.row[k][j]) * F, 0);
        }
      }
    }
  }
  for (int k = 0; k < 8; ++k) {
    const scalar_t* wx = ch.w[0][k & 1];
    const scalar_t* wy = ch.w[1][(k >> 1) & 1];
    const scalar_t* wz = ch.w[2][k >> 2];
    for (int j = 0; j < m; ++j) ch.cw[k][j] = wx[j] * wy[j] * wz[j];
  }
}

// Blocked transposes between the API layout [N, L, F] and the level-major scratch layout
// [L, N, F] used inside the kernels, for points [begin, end). Level-major scratch turns the
// per-level reads/writes of 8 bytes at a 128-byte stride into contiguous streams (~25% on the
// forward, ~35% on the table gradient).
template <typename scalar_t, int FT>
void points_to_levels(const scalar_t* src, scalar_t* dst, int64_t n, int64_t L, int64_t f_runtime,
                      int64_t begin, int64_t end) {
  const int64_t F = FT > 0 ? FT : f_runtime;
  constexpr int64_t kBlock = 64;
  for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
    const int64_t i1 = std::min(end, i0 + kBlock);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* a = src + (i * L + l) * F;
        scalar_t* b = dst + (l * n + i) * F;
        for (int64_t c = 0; c < F; ++c) b[c] = a[c];
      }
    }
  }
}

template <typename scalar_t, int FT>
void levels_to_points(const scalar_t* src, scalar_t* dst, int64_t n, int64_t L, int64_t f_runtime,
                      int64_t begin, int64_t end) {
  const int64_t F = FT > 0 ? FT : f_runtime;
  constexpr int64_t kBlock = 64;
  for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
    const int64_t i1 = std::min(end, i0 + kBlock);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* a = src + (l * n + i) * F;
        scalar_t* b = dst + (i * L + l) * F;
        for (int64_t c = 0; c < F; ++c) b[c] = a[c];
      }
    }
  }
}

// FT > 0: feature count known at compile time; FT == 0: runtime F.
template <typename scalar_t, int FT>
void forward_impl(const scalar_t* x, const scalar_t* emb, scalar_t* out, int64_t n,
                  const std::vector<Level<scalar_t>>& levels, int64_t f_runtime) {
  const int64_t F = FT > 0 ? FT : f_runtime;
  const int64_t L = static_cast<int64_t>(levels.size());
  at::Tensor scratch = empty_huge({L * n * F}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));  // [L, N, F]
  scalar_t* lm = scratch.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    const int64_t count = end - begin;
    const std::vector<scalar_t> xs = clamped_soa(x, begin, end);
    Chunk<scalar_t> ch;
    for (int64_t l = 0; l < L; ++l) {
      const Level<scalar_t>& lv = levels[l];
      for (int64_t j0 = 0; j0 < count; j0 += kChunk) {
        const int m = static_cast<int>(std::min<int64_t>(kChunk, count - j0));
        locate_chunk(xs.data(), count, j0, m, lv, ch, emb, F, false);
        scalar_t* o = lm + (l * n + begin + j0) * F;
        for (int j = 0; j < m; ++j, o += F) {
          if (FT > 0) {
            scalar_t acc[FT > 0 ? FT : 1] = {};
            for (int k = 0; k < 8; ++k) {
              const scalar_t w = ch.cw[k][j];
              const scalar_t* e = emb + static_cast<int64_t>(ch.row[k][j]) * F;
              for (int64_t c = 0; c < F; ++c) acc[c] += w * e[c];
            }
            for (int64_t c = 0; c < F; ++c) o[c] = acc[c];
          } else {
            for (int64_t c = 0; c < F; ++c) o[c] = scalar_t(0);
            for (int k = 0; k < 8; ++k) {
              const scalar_t w = ch.cw[k][j];
              const scalar_t* e = emb + static_cast<int64_t>(ch.row[k][j]) * F;
              for (int64_t c = 0; c < F; ++c) o[c] += w * e[c];
            }
          }
        }
      }
    }
    levels_to_points<scalar_t, FT>(lm, out, n, L, F, begin, end);
  });
}

template <typename scalar_t, int FT>
void backward_table_impl(const scalar_t* x, const scalar_t* grad, scalar_t* grad_emb, int64_t n,
                         const std::vector<Level<scalar_t>>& levels, const std::vector<int64_t>& offsets,
                         int64_t f_runtime) {
  const int64_t F = FT > 0 ? FT : f_runtime;
  const int64_t L = static_cast<int64_t>(levels.size());
  std::vector<scalar_t> xs(static_cast<size_t>(3 * n));
  at::Tensor scratch = empty_huge({L * n * F}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));  // grad as [L, N, F]
  scalar_t* glm = scratch.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    points_to_levels<scalar_t, FT>(grad, glm, n, L, F, begin, end);
    for (int64_t i = begin; i < end; ++i) {
      for (int d = 0; d < 3; ++d) {
        const scalar_t v = x[3 * i + d];
        xs[d * n + i] = v > scalar_t(0) ? (v < scalar_t(1) ? v : scalar_t(1)) : scalar_t(0);
      }
    }
  });
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), L));
  // One task per thread; thread t owns levels t, t + nt, t + 2 nt, ... (no write conflicts, and
  // the cheap cache-resident dense levels are spread over the threads).
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    Chunk<scalar_t> ch;
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t l = t; l < L; l += nt) {
        const Level<scalar_t>& lv = levels[l];
        // Zero this level's slice here so zeroing (and first touch) is parallel too.
        std::memset(grad_emb + offsets[l] * F, 0,
                    sizeof(scalar_t) * static_cast<size_t>((offsets[l + 1] - offsets[l]) * F));
        for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
          const int m = static_cast<int>(std::min<int64_t>(kChunk, n - j0));
          locate_chunk(xs.data(), n, j0, m, lv, ch, grad_emb, F, true);
          const scalar_t* g = glm + (l * n + j0) * F;
          for (int j = 0; j < m; ++j, g += F) {
            if (FT > 0) {
              scalar_t gv[FT > 0 ? FT : 1];
              for (int64_t c = 0; c < F; ++c) gv[c] = g[c];
              for (int k = 0; k < 8; ++k) {
                const scalar_t w = ch.cw[k][j];
                scalar_t* e = grad_emb + static_cast<int64_t>(ch.row[k][j]) * F;
                for (int64_t c = 0; c < F; ++c) e[c] += w * gv[c];
              }
            } else {
              for (int k = 0; k < 8; ++k) {
                const scalar_t w = ch.cw[k][j];
                scalar_t* e = grad_emb + static_cast<int64_t>(ch.row[k][j]) * F;
                for (int64_t c = 0; c < F; ++c) e[c] += w * g[c];
              }
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_input_impl(const scalar_t* x, const scalar_t* emb, const scalar_t* grad, scalar_t* grad_x,
                         int64_t n, const std::vector<Level<scalar_t>>& levels, int64_t F) {
  const int64_t L = static_cast<int64_t>(levels.size());
  at::Tensor scratch = empty_huge({L * n * F}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));  // grad as [L, N, F]
  scalar_t* glm = scratch.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    const int64_t count = end - begin;
    const std::vector<scalar_t> xs = clamped_soa(x, begin, end);
    points_to_levels<scalar_t, 0>(grad, glm, n, L, F, begin, end);
    Chunk<scalar_t> ch;
    std::fill(grad_x + 3 * begin, grad_x + 3 * end, scalar_t(0));
    for (int64_t l = 0; l < L; ++l) {
      const Level<scalar_t>& lv = levels[l];
      for (int64_t j0 = 0; j0 < count; j0 += kChunk) {
        const int m = static_cast<int>(std::min<int64_t>(kChunk, count - j0));
        locate_chunk(xs.data(), count, j0, m, lv, ch, emb, F, false);
        const scalar_t* g = glm + (l * n + begin + j0) * F;
        for (int j = 0; j < m; ++j, g += F) {
          // s[k] = <embedding of corner k, upstream gradient>
          scalar_t s[8];
          for (int k = 0; k < 8; ++k) {
            const scalar_t* e = emb + static_cast<int64_t>(ch.row[k][j]) * F;
            scalar_t acc = 0;
            for (int64_t c = 0; c < F; ++c) acc += e[c] * g[c];
            s[k] = acc;
          }
          // d weight_k / d f_x = (+1 if bit0 else -1) * wy * wz, etc.; d f / d x = N_l.
          scalar_t dx = 0, dy = 0, dz = 0;
          for (int k = 0; k < 8; ++k) {
            const int bx = k & 1, by = (k >> 1) & 1, bz = k >> 2;
            const scalar_t wx = ch.w[0][bx][j], wy = ch.w[1][by][j], wz = ch.w[2][bz][j];
            dx += (bx ? s[k] : -s[k]) * wy * wz;
            dy += (by ? s[k] : -s[k]) * wx * wz;
            dz += (bz ? s[k] : -s[k]) * wx * wy;
          }
          scalar_t* gx = grad_x + 3 * (begin + j0 + j);
          gx[0] += dx * lv.scale;
          gx[1] += dy * lv.scale;
          gx[2] += dz * lv.scale;
        }
      }
    }
    // Clamping to [0, 1] passes the gradient only inside the closed interval (as torch.clamp).
    for (int64_t i = begin; i < end; ++i) {
      for (int d = 0; d < 3; ++d) {
        const scalar_t v = x[3 * i + d];
        if (!(v >= scalar_t(0) && v <= scalar_t(1))) grad_x[3 * i + d] = scalar_t(0);
      }
    }
  });
}

void check_inputs(const at::Tensor& x, const at::Tensor& emb) {
  TORCH_CHECK(x.device().is_cpu() && emb.device().is_cpu(), "hash encoding CPU kernel needs CPU tensors");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "x must be [N, 3]");
  TORCH_CHECK(emb.dim() == 2, "embeddings must be [T_total, F]");
  TORCH_CHECK(x.scalar_type() == emb.scalar_type(), "x and embeddings must share a dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "dtype must be float32/64");
}

at::Tensor hash_encode_forward(const at::Tensor& x_in, const at::Tensor& emb_in, at::IntArrayRef resolutions,
                               at::IntArrayRef offsets, at::IntArrayRef dense, int64_t hashmap_size) {
  check_inputs(x_in, emb_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor emb = emb_in.contiguous();
  const int64_t n = x.size(0), F = emb.size(1), L = static_cast<int64_t>(resolutions.size());
  TORCH_CHECK(emb.size(0) == offsets.back(), "embeddings rows must equal offsets[-1]");
  at::Tensor out = empty_huge({n, L * F}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_encode_forward", [&] {
    const auto levels = make_levels<scalar_t>(resolutions, offsets, dense, hashmap_size);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* ep = emb.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    switch (F) {
      case 1: forward_impl<scalar_t, 1>(xp, ep, op, n, levels, F); break;
      case 2: forward_impl<scalar_t, 2>(xp, ep, op, n, levels, F); break;
      case 4: forward_impl<scalar_t, 4>(xp, ep, op, n, levels, F); break;
      case 8: forward_impl<scalar_t, 8>(xp, ep, op, n, levels, F); break;
      default: forward_impl<scalar_t, 0>(xp, ep, op, n, levels, F); break;
    }
  });
  return out;
}

// Returns (grad_embeddings or an empty tensor, grad_x or an empty tensor). `embeddings` is only
// read for the input gradient; pass an empty tensor otherwise (T_total = offsets[-1],
// F = grad.size(1) / L).
std::tuple<at::Tensor, at::Tensor> hash_encode_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                        const at::Tensor& emb_in, at::IntArrayRef resolutions,
                                                        at::IntArrayRef offsets, at::IntArrayRef dense,
                                                        int64_t hashmap_size, bool need_table_grad,
                                                        bool need_input_grad) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.size(1) == 3, "x must be a CPU [N, 3] tensor");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble, "dtype must be float32/64");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.to(x.scalar_type()).contiguous();
  const int64_t n = x.size(0), L = static_cast<int64_t>(resolutions.size());
  TORCH_CHECK(L > 0 && grad.dim() == 2 && grad.size(0) == n && grad.size(1) % L == 0, "grad must be [N, L * F]");
  const int64_t F = grad.size(1) / L;
  at::Tensor emb;
  if (need_input_grad) {
    check_inputs(x_in, emb_in);
    emb = emb_in.contiguous();
    TORCH_CHECK(emb.size(0) == offsets.back() && emb.size(1) == F, "embeddings must be [offsets[-1], F]");
  }
  at::Tensor grad_emb = need_table_grad ? empty_huge({offsets.back(), F}, x.options()) : at::empty({0}, x.options());
  at::Tensor grad_x = need_input_grad ? at::empty_like(x) : at::empty({0}, x.options());
  const std::vector<int64_t> offs(offsets.begin(), offsets.end());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_encode_backward", [&] {
    const auto levels = make_levels<scalar_t>(resolutions, offsets, dense, hashmap_size);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    if (need_table_grad) {
      scalar_t* gep = grad_emb.mutable_data_ptr<scalar_t>();
      switch (F) {
        case 1: backward_table_impl<scalar_t, 1>(xp, gp, gep, n, levels, offs, F); break;
        case 2: backward_table_impl<scalar_t, 2>(xp, gp, gep, n, levels, offs, F); break;
        case 4: backward_table_impl<scalar_t, 4>(xp, gp, gep, n, levels, offs, F); break;
        case 8: backward_table_impl<scalar_t, 8>(xp, gp, gep, n, levels, offs, F); break;
        default: backward_table_impl<scalar_t, 0>(xp, gp, gep, n, levels, offs, F); break;
      }
    }
    if (need_input_grad) {
      backward_input_impl<scalar_t>(xp, emb.const_data_ptr<scalar_t>(), gp, grad_x.mutable_data_ptr<scalar_t>(),
                                    n, levels, F);
    }
  });
  return {grad_emb, grad_x};
}

void advise_huge_pages_op(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "advise_huge_pages needs a CPU tensor");
  advise_huge_pages(t.data_ptr(), t.nbytes());
}

}  // namespace

TORCH_LIBRARY(langfield_hashgrid, m) {
  m.def("advise_huge_pages(Tensor t) -> ()");
  m.def("forward(Tensor x, Tensor embeddings, int[] resolutions, int[] offsets, int[] dense, "
        "int hashmap_size) -> Tensor");
  m.def("backward(Tensor grad, Tensor x, Tensor embeddings, int[] resolutions, int[] offsets, int[] dense, "
        "int hashmap_size, bool need_table_grad, bool need_input_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(langfield_hashgrid, CPU, m) {
  m.impl("forward", &hash_encode_forward);
  m.impl("backward", &hash_encode_backward);
  m.impl("advise_huge_pages", &advise_huge_pages_op);
}
