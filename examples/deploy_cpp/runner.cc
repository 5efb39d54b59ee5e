// kiln_run: run a kiln library without Python, with only the TVM runtime.
//
//   kiln_run [--repeat N] MODEL.so OUT_DIR IN_0.npy [IN_1.npy ...]
//
// Loads the library, feeds the .npy files to its inputs in order, and writes its outputs as
// OUT_DIR/out_0.npy, out_1.npy, ... With --repeat N it runs the model N times more and prints
// the median time of one run. Built for this machine or cross-built for aarch64 (see
// CMakeLists.txt); on a board it is what replaces `kiln run`.
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// A NumPy array as .npy stores it (version 1 or 2 header, C order, little endian).
struct Npy {
  std::string descr;            // "<f4", "|b1", ...
  std::vector<int64_t> shape;
  std::vector<char> data;
};

struct DTypeName {
  const char* descr;
  DLDataType dtype;
};

const DTypeName kDTypes[] = {
    {"<f4", {kDLFloat, 32, 1}}, {"<f2", {kDLFloat, 16, 1}}, {"<f8", {kDLFloat, 64, 1}},
    {"|i1", {kDLInt, 8, 1}},    {"<i2", {kDLInt, 16, 1}},   {"<i4", {kDLInt, 32, 1}},
    {"<i8", {kDLInt, 64, 1}},   {"|u1", {kDLUInt, 8, 1}},   {"<u2", {kDLUInt, 16, 1}},
    {"<u4", {kDLUInt, 32, 1}},  {"<u8", {kDLUInt, 64, 1}},  {"|b1", {kDLBool, 8, 1}},
};

DLDataType DTypeOf(const std::string& descr) {
  for (const auto& d : kDTypes) {
    if (descr == d.descr) return d.dtype;
  }
  throw std::runtime_error("unsupported .npy dtype " + descr);
}

std::string DescrOf(DLDataType t) {
  for (const auto& d : kDTypes) {
    if (d.dtype.code == t.code && d.dtype.bits == t.bits) return d.descr;
  }
  throw std::runtime_error("output dtype has no .npy name");
}

std::string Field(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error("npy header lacks " + key);
  return header.substr(header.find(':', at) + 1);
}

Npy ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not .npy");
  uint32_t len = 0;
  if (magic[6] == 1) {
    uint16_t l16;
    f.read(reinterpret_cast<char*>(&l16), 2);
    len = l16;
  } else {
    f.read(reinterpret_cast<char*>(&len), 4);
  }
  std::string header(len, ' ');
  f.read(&header[0], len);
  Npy npy;
  std::string d = Field(header, "descr");
  npy.descr = d.substr(d.find('\'') + 1, 3);
  if (Field(header, "fortran_order").find("True") < 8) throw std::runtime_error(path + ": Fortran order");
  std::string s = Field(header, "shape");
  std::stringstream dims(s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1));
  for (std::string tok; std::getline(dims, tok, ',');) {
    if (tok.find_first_of("0123456789") != std::string::npos) npy.shape.push_back(std::stoll(tok));
  }
  npy.data.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return npy;
}

void WriteNpy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
              const void* data, size_t nbytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << header;
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  if (!f) throw std::runtime_error("cannot write " + path);
}

struct CPUAlloc {  // 64-byte aligned host memory, as TVM's kernels expect
  void AllocData(DLTensor* t) {
    size_t n = (tvm::ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, n == 0 ? 64 : n);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

}  // namespace

int main(int argc, char** argv) {
  int repeat = 0;
  if (argc > 2 && std::string(argv[1]) == "--repeat") {
    repeat = std::atoi(argv[2]);
    argv += 2;
    argc -= 2;
  }
  if (argc < 3 || repeat < 0) {
    std::cerr << "usage: kiln_run [--repeat N] MODEL.so OUT_DIR [IN_0.npy ...]\n";
    return 2;
  }
  try {
    namespace ffi = tvm::ffi;
    ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // one CPU device, pooled allocator (what tvm.relax.VirtualMachine does for cpu)
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
    std::vector<ffi::Tensor> inputs;
    for (int i = 3; i < argc; ++i) {
      Npy npy = ReadNpy(argv[i]);
      ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(npy.shape.data(), npy.shape.size()),
                                               DTypeOf(npy.descr), DLDevice{kDLCPU, 0});
      if (npy.data.size() != ffi::GetDataSize(*t.GetDLTensorPtr())) {
        throw std::runtime_error(std::string(argv[i]) + ": data size does not match its shape");
      }
      std::memcpy(t.data_ptr(), npy.data.data(), npy.data.size());
      inputs.push_back(t);
    }
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Function run = vm->GetFunction("main").value();
    ffi::Any result;
    run.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    if (repeat > 0) {
      std::vector<double> ms;
      for (int i = 0; i < repeat; ++i) {
        auto start = std::chrono::steady_clock::now();
        run.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      }
      std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
      std::cout << "median_ms " << ms[ms.size() / 2] << "\n";
    }
    std::vector<ffi::Tensor> outputs;
    if (auto t = result.as<ffi::Tensor>()) {
      outputs.push_back(*t);
    } else {
      for (const ffi::Any& o : result.cast<ffi::Array<ffi::Any>>()) outputs.push_back(o.cast<ffi::Tensor>());
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const DLTensor* t = outputs[i].GetDLTensorPtr();
      std::vector<int64_t> shape(t->shape, t->shape + t->ndim);
      WriteNpy(std::string(argv[2]) + "/out_" + std::to_string(i) + ".npy", DescrOf(t->dtype), shape,
               static_cast<const char*>(t->data) + t->byte_offset, ffi::GetDataSize(*t));
    }
  } catch (const std::exception& e) {
    std::cerr << "kiln_run: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
