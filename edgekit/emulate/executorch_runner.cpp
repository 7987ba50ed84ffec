// Runs an ExecuTorch program inside the arm64 emulator, where ExecuTorch's Python runtime cannot
// (its pybindings link libtorch, and the only aarch64 torch on PyPI is a multi-GB CUDA build).
//
// Cross-compiled by edgekit/emulate/executorch.py with Debian's g++-aarch64-linux-gnu against the
// headers and runtime libraries of executorch's own aarch64 wheel (the host's version), which do
// not link libtorch: libexecutorch.so (program, Module, data loaders), the optimized portable
// kernels, the XNNPACK backend and its thread pool. Kernels and backends register themselves from
// static initialisers, so the runner is linked with --no-as-needed.
//
//   executorch_runner MODEL.pte DIR SETS THREADS TIMED_RUNS COUNT_INSTRUCTIONS
//
// DIR holds the inputs as raw little-endian files, DIR/<set>.in<k>.bin for input k of input set
// <set> (0 .. SETS-1), in the order of the program's forward() inputs; their shapes and dtypes are
// the program's own (method metadata), and a file of the wrong size is refused. Every set is run
// once and each output k is written to DIR/<set>.out<k>.bin. Then, with TIMED_RUNS > 0, set 0 is
// run that many more times and timed; with COUNT_INSTRUCTIONS = 1 each timed run is bracketed by
// the marker system call edgekit's qemu plugin (insncount.c) records. DIR/result.json gets the
// load time, the timings, and every output's dtype and shape, which the host checks against the
// manifest before it reads the raw files.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <unistd.h>

#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

using executorch::aten::ScalarType;
using executorch::extension::TensorPtr;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

// The wheel ships the thread pool library but not its header (which needs pthreadpool.h): the
// two entry points used here, as declared in extension/threadpool/threadpool.h.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

constexpr long kMarkerSyscall = 0x4544;  // insncount.c's MARKER: ENOSYS for the guest kernel

int fail(const std::string& message) {
  std::fprintf(stderr, "executorch_runner: %s\n", message.c_str());
  return 1;
}

// numpy spellings, so the host reads the outputs with np.fromfile(path, dtype).
const char* numpy_dtype(ScalarType type) {
  switch (type) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::Double: return "float64";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    default: return nullptr;
  }
}

// ExecuTorch's error codes are documented in hex (runtime/core/error.h), e.g. 0x23.
std::string error_text(Error error) {
  std::ostringstream text;
  text << "error 0x" << std::hex << static_cast<int>(error);
  return text.str();
}

bool read_file(const std::string& path, std::vector<char>& bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    return fail("usage: executorch_runner MODEL.pte DIR SETS THREADS TIMED_RUNS "
                "COUNT_INSTRUCTIONS");
  }
  const std::string model_path = argv[1];
  const std::string dir = argv[2];
  const int sets = std::atoi(argv[3]);
  const int threads = std::atoi(argv[4]);
  const int timed_runs = std::atoi(argv[5]);
  const bool count_instructions = std::atoi(argv[6]) == 1;
  if (sets < 1) return fail("no input sets");

  // XNNPACK's pool is process-wide; 0 keeps its default (one thread per reported core).
  if (threads > 0) {
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);
  }

  const auto load_start = std::chrono::steady_clock::now();
  Module module(model_path, Module::LoadMode::File);
  const Error loaded = module.load_method("forward");
  if (loaded != Error::Ok) {
    return fail("could not load forward() from " + model_path + " (" + error_text(loaded) + ")");
  }
  const double load_s = seconds_since(load_start);
  auto meta = module.method_meta("forward");
  if (!meta.ok()) return fail("no metadata for forward()");

  // Input set i's tensors; `buffers` keeps their bytes alive.
  std::vector<std::vector<std::vector<char>>> buffers(sets);
  std::vector<std::vector<TensorPtr>> tensors(sets);
  for (int set = 0; set < sets; ++set) {
    for (size_t k = 0; k < meta->num_inputs(); ++k) {
      const std::string path = dir + "/" + std::to_string(set) + ".in" + std::to_string(k) + ".bin";
      auto info = meta->input_tensor_meta(k);
      if (!info.ok()) return fail("input " + std::to_string(k) + " of forward() is not a tensor");
      std::vector<char>& bytes = buffers[set].emplace_back();
      if (!read_file(path, bytes)) return fail("missing input file " + path);
      if (bytes.size() != info->nbytes()) {
        return fail(path + " has " + std::to_string(bytes.size()) + " bytes, the program expects " +
                    std::to_string(info->nbytes()));
      }
      std::vector<executorch::aten::SizesType> sizes(info->sizes().begin(), info->sizes().end());
      tensors[set].push_back(
          executorch::extension::from_blob(bytes.data(), sizes, info->scalar_type()));
    }
  }

  auto run = [&](int set) {
    std::vector<EValue> values(tensors[set].begin(), tensors[set].end());
    return module.forward(values);
  };

  // Every set once; these runs are also the warm-up of the timed runs below.
  std::ostringstream outputs_json;
  for (int set = 0; set < sets; ++set) {
    auto result = run(set);
    if (!result.ok()) {
      return fail("forward() failed on input set " + std::to_string(set) + " (" +
                  error_text(result.error()) + ")");
    }
    for (size_t k = 0; k < result->size(); ++k) {
      if (!(*result)[k].isTensor()) return fail("output " + std::to_string(k) + " is no tensor");
      const auto& tensor = (*result)[k].toTensor();
      const char* dtype = numpy_dtype(tensor.scalar_type());
      if (dtype == nullptr) return fail("output " + std::to_string(k) + " has an unknown dtype");
      const std::string path = dir + "/" + std::to_string(set) + ".out" + std::to_string(k) + ".bin";
      std::ofstream out(path, std::ios::binary);
      out.write(static_cast<const char*>(tensor.const_data_ptr()), tensor.nbytes());
      if (!out) return fail("could not write " + path);
      if (set == 0) {
        outputs_json << (k ? ", " : "") << "{\"dtype\": \"" << dtype << "\", \"shape\": [";
        for (size_t d = 0; d < static_cast<size_t>(tensor.dim()); ++d) {
          outputs_json << (d ? ", " : "") << tensor.size(d);
        }
        outputs_json << "]}";
      }
    }
  }

  std::vector<double> samples_ms;
  for (int i = 0; i < timed_runs; ++i) {
    if (count_instructions) syscall(kMarkerSyscall);
    const auto start = std::chrono::steady_clock::now();
    auto result = run(0);
    samples_ms.push_back(seconds_since(start) * 1e3);
    if (count_instructions) syscall(kMarkerSyscall);
    if (!result.ok()) return fail("forward() failed in timed run " + std::to_string(i));
  }

  std::ofstream result(dir + "/result.json");
  result.precision(17);
  result << "{\"load_s\": " << load_s << ", \"samples_ms\": [";
  for (size_t i = 0; i < samples_ms.size(); ++i) result << (i ? ", " : "") << samples_ms[i];
  result << "], \"outputs\": [" << outputs_json.str() << "]}\n";
  return result ? 0 : fail("could not write " + dir + "/result.json");
}
