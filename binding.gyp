# CPU addon (the default `npm install` path). Sources and per-level flags come from sources.json, the list
# CMakeLists.txt reads too.
{
  "target_defaults": {
    "cflags": ["-O3", "-fPIC", "-fno-math-errno"],
    "cflags_cc": ["-std=c++17", "-O3", "-fPIC", "-fno-math-errno"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++1y"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"]
  },
  "targets": [
    {
      "target_name": "seqkern_avx512",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('./sources.json').avx512.join(' ')\")"],
      "cflags_cc": ["<!@(node -p \"require('./sources.json').flags.avx512.join(' ')\")"]
    },
    {
      "target_name": "seqkern_avx2",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('./sources.json').avx2.join(' ')\")"],
      "cflags_cc": ["<!@(node -p \"require('./sources.json').flags.avx2.join(' ')\")"]
    },
    {
      "target_name": "seqkern_portable",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('./sources.json').portable.join(' ')\")"]
    },
    {
      "target_name": "seqkern",
      "sources": ["<!@(node -p \"require('./sources.json').common.join(' ')\")"],
      "dependencies": ["seqkern_avx512", "seqkern_avx2", "seqkern_portable"],
      "libraries": ["-pthread"],
      "defines": ["SEQKERN_BUILD_SYSTEM=\"node-gyp\""]
    },
    {
      "comment": "The CUDA kernels and glue executed on the CPU (cuda/sim), for CI and machines without a GPU.",
      "target_name": "seqkern_sim",
      "sources": ["<!@(node -p \"require('./sources.json').cudaSim.join(' ')\")"],
      "include_dirs": ["cuda", "cuda/sim"],
      "cflags_cc": ["-O2", "-fno-strict-aliasing", "-Wno-unknown-pragmas"],
      "defines": ["SEQKERN_CUDA_SIM=1"],
      "libraries": ["-pthread"]
    }
  ]
}
