// Ray marching through a binary occupancy grid with constant steps -- CPU kernel,
// parallelised over rays with at::parallel_for.
//
// Semantics match the constant-step branch of langfield/ops/occupancy.py::march_rays exactly
// (the same float32 operations in the same order, compiled with -ffp-contract=off). The caller
// computes, in torch, each ray's entry/exit t_min/t_max (already clipped to near/far), the
// first-sample offset (0.5, or a jitter in [0, 1)) and the candidate count n_r; for k < n_r:
//
//   t_end   = t_min + (k + offset) * step          (float32: add, then multiply, then add)
//   t_start = max(t_end - step, t_min)
//   t_end   = min(t_end, t_max)
//   keep if t_end > t_start and, with a grid, the midpoint 0.5 * (t_start + t_end) lies in an
//   occupied cell: p = o + d * t_mid; s = (p - aabb_min) * (res / (aabb_max - aabb_min));
//   inside if 0 <= s < res on every axis; cell = (i, j, k) = trunc(s); flat = i res^2 + j res + k.
//
// Output: packed (t_starts, t_ends, ray_indices) sorted by ray, then by k, as the torch path.
// Two passes (count kept samples per ray, then fill at the prefix-sum offsets) keep it
// deterministic and free of atomics; the thread count never changes the result.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

namespace {

constexpr int64_t kRayGrain = 256;  // min rays per parallel task

struct Grid {
  const bool* binary;  // [res^3] or nullptr (no grid: every sample inside the box is kept)
  float lo[3];
  float inv[3];  // res / (aabb_max - aabb_min), float32 as torch computes it
  int64_t res;
  float res_f;
};

struct Ray {
  float o[3], d[3];
  float t_min, t_max, offset;
  int64_t count;
};

// Whether candidate k of the ray is kept; writes its interval.
inline bool candidate(const Ray& r, int64_t k, float step, const Grid& g, float& t_start, float& t_end) {
  const float kf = static_cast<float>(k);
  float te = r.t_min + (kf + r.offset) * step;
  float ts = te - step;
  ts = ts < r.t_min ? r.t_min : ts;
  te = te < r.t_max ? te : r.t_max;
  if (!(te > ts)) return false;
  t_start = ts;
  t_end = te;
  if (g.binary == nullptr) return true;
  const float mid = 0.5f * (ts + te);
  int64_t ijk[3];
  for (int a = 0; a < 3; ++a) {
    const float p = r.o[a] + r.d[a] * mid;
    const float s = (p - g.lo[a]) * g.inv[a];
    if (!(s >= 0.0f && s < g.res_f)) return false;  // outside the box (or NaN)
    int64_t c = static_cast<int64_t>(s);
    ijk[a] = c < g.res - 1 ? c : g.res - 1;
  }
  return g.binary[(ijk[0] * g.res + ijk[1]) * g.res + ijk[2]];
}

inline Ray load_ray(const float* o, const float* d, const float* tmin, const float* tmax, const float* off,
                    const int64_t* counts, int64_t i) {
  Ray r;
  for (int a = 0; a < 3; ++a) {
    r.o[a] = o[3 * i + a];
    r.d[a] = d[3 * i + a];
  }
  r.t_min = tmin[i];
  r.t_max = tmax[i];
  r.offset = off[i];
  r.count = counts[i];
  return r;
}

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has the wrong dtype");
  TORCH_CHECK(t.dim() == dim, name, " has the wrong number of dimensions");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_constant(
    const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& t_min, const at::Tensor& t_max,
    const at::Tensor& offset, const at::Tensor& counts, double step_size, const at::Tensor& binary,
    const at::Tensor& aabb, int64_t resolution) {
  check(origins, "origins", at::kFloat, 2);
  check(directions, "directions", at::kFloat, 2);
  check(t_min, "t_min", at::kFloat, 1);
  check(t_max, "t_max", at::kFloat, 1);
  check(offset, "offset", at::kFloat, 1);
  check(counts, "counts", at::kLong, 1);
  check(aabb, "aabb", at::kFloat, 2);
  const int64_t R = origins.size(0);
  TORCH_CHECK(origins.size(1) == 3 && directions.size(0) == R && directions.size(1) == 3, "origins/directions must be [R, 3]");
  TORCH_CHECK(t_min.size(0) == R && t_max.size(0) == R && offset.size(0) == R && counts.size(0) == R,
              "t_min, t_max, offset and counts must be [R]");
  TORCH_CHECK(aabb.size(0) == 2 && aabb.size(1) == 3, "aabb must be [2, 3]");
  Grid g;
  g.binary = nullptr;
  g.res = resolution;
  g.res_f = static_cast<float>(resolution);
  const float* box = aabb.data_ptr<float>();
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = box[a];
    const float extent = box[3 + a] - box[a];
    g.inv[a] = g.res_f / extent;
  }
  if (binary.numel() > 0) {
    check(binary, "binary", at::kBool, 1);
    TORCH_CHECK(resolution > 0 && binary.numel() == resolution * resolution * resolution,
                "binary must hold resolution^3 cells");
    g.binary = binary.data_ptr<bool>();
  }
  const float step = static_cast<float>(step_size);
  const float *o = origins.data_ptr<float>(), *d = directions.data_ptr<float>();
  const float *tmin = t_min.data_ptr<float>(), *tmax = t_max.data_ptr<float>(), *off = offset.data_ptr<float>();
  const int64_t* cnt = counts.data_ptr<int64_t>();

  at::Tensor kept = at::zeros({R}, counts.options());
  int64_t* kept_p = kept.data_ptr<int64_t>();
  at::parallel_for(0, R, kRayGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Ray r = load_ray(o, d, tmin, tmax, off, cnt, i);
      int64_t n = 0;
      float ts, te;
      for (int64_t k = 0; k < r.count; ++k) n += candidate(r, k, step, g, ts, te);
      kept_p[i] = n;
    }
  });
  at::Tensor first = at::cumsum(kept, 0) - kept;
  const int64_t total = R > 0 ? first[R - 1].item<int64_t>() + kept_p[R - 1] : 0;
  at::Tensor t_starts = at::empty({total}, origins.options());
  at::Tensor t_ends = at::empty({total}, origins.options());
  at::Tensor ray_indices = at::empty({total}, counts.options());
  const int64_t* first_p = first.data_ptr<int64_t>();
  float *ts_p = t_starts.data_ptr<float>(), *te_p = t_ends.data_ptr<float>();
  int64_t* ri_p = ray_indices.data_ptr<int64_t>();
  at::parallel_for(0, R, kRayGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (kept_p[i] == 0) continue;
      const Ray r = load_ray(o, d, tmin, tmax, off, cnt, i);
      int64_t at = first_p[i];
      float ts, te;
      for (int64_t k = 0; k < r.count; ++k) {
        if (candidate(r, k, step, g, ts, te)) {
          ts_p[at] = ts;
          te_p[at] = te;
          ri_p[at] = i;
          ++at;
        }
      }
    }
  });
  return {t_starts, t_ends, ray_indices};
}

}  // namespace

TORCH_LIBRARY(langfield_march, m) {
  m.def("march_constant(Tensor origins, Tensor directions, Tensor t_min, Tensor t_max, Tensor offset, "
        "Tensor counts, float step_size, Tensor binary, Tensor aabb, int resolution) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(langfield_march, CPU, m) {
  m.impl("march_constant", &march_constant);
}
