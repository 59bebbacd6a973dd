/*
 * Loads a SavedModel with TensorFlow's C API -- TF_LoadSessionFromSavedModel, the loader TF Serving's
 * C++ runtime uses -- runs signatures' tensors (several runs on one loaded model) and writes the outputs. No Python is involved, so a
 * model this program answers is one the C++ runtime can load and run (no py_function, no op missing
 * from the C++ library).
 *
 *   run_signature EXPORT_DIR REQUEST_FILE RESPONSE_FILE
 *
 * REQUEST_FILE (little-endian, written by serving/capi.py):
 *   "MVKEREQ2"; u32 number of runs; per run: u32 number of inputs; per input: u32 name length, the graph tensor's op name,
 *   i32 output index, i32 TF_DataType, i32 rank, i64 dims[rank], then the values: for TF_STRING one
 *   u64 length and the bytes per element, else u64 byte count and the raw buffer;
 *   u32 number of outputs; per output: u32 name length, op name, i32 output index.
 * RESPONSE_FILE: "MVKERES2"; u32 number of runs; per run: u32 number of outputs; per output:
 *   i32 TF_DataType, i32 rank, i64 dims[rank], the values encoded as above.
 * Exit status 0 on success; otherwise 1 and one line on stderr: what failed and TensorFlow's message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "run_signature: %s: %s\n", what, detail ? detail : "");
  exit(1);
}

static void read_exact(FILE *f, void *buf, size_t n) {
  if (n && fread(buf, 1, n, f) != n) fail("request", "truncated file");
}

static uint32_t read_u32(FILE *f) { uint32_t v; read_exact(f, &v, 4); return v; }
static int32_t read_i32(FILE *f) { int32_t v; read_exact(f, &v, 4); return v; }
static int64_t read_i64(FILE *f) { int64_t v; read_exact(f, &v, 8); return v; }
static uint64_t read_u64(FILE *f) { uint64_t v; read_exact(f, &v, 8); return v; }

static char *read_name(FILE *f) {
  uint32_t n = read_u32(f);
  char *s = malloc((size_t)n + 1);
  if (!s) fail("request", "out of memory");
  read_exact(f, s, n);
  s[n] = '\0';
  return s;
}

static TF_Output graph_output(TF_Graph *graph, FILE *f) {
  char *name = read_name(f);
  int32_t index = read_i32(f);
  TF_Operation *op = TF_GraphOperationByName(graph, name);
  if (!op) fail("no such tensor in the graph", name);
  free(name);
  TF_Output out = {op, index};
  return out;
}

static TF_Tensor *read_tensor(FILE *f) {
  TF_DataType dtype = (TF_DataType)read_i32(f);
  int32_t rank = read_i32(f);
  if (rank < 0 || rank > 8) fail("request", "a tensor rank outside 0..8");
  int64_t dims[8];
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    dims[i] = read_i64(f);
    if (dims[i] < 0) fail("request", "a negative dimension");
    count *= dims[i];
  }
  if (dtype == TF_STRING) {
    TF_Tensor *t = TF_AllocateTensor(TF_STRING, dims, rank, (size_t)count * sizeof(TF_TString));
    TF_TString *values = (TF_TString *)TF_TensorData(t);
    for (int64_t i = 0; i < count; ++i) {
      uint64_t n = read_u64(f);
      char *bytes = malloc(n ? n : 1);
      if (!bytes) fail("request", "out of memory");
      read_exact(f, bytes, n);
      TF_TString_Init(&values[i]);
      TF_TString_Copy(&values[i], bytes, n);
      free(bytes);
    }
    return t;
  }
  uint64_t nbytes = read_u64(f);
  if (nbytes != (uint64_t)count * TF_DataTypeSize(dtype)) fail("request", "byte count does not match the shape");
  TF_Tensor *t = TF_AllocateTensor(dtype, dims, rank, nbytes);
  read_exact(f, TF_TensorData(t), nbytes);
  return t;
}

static void write_tensor(FILE *f, const TF_Tensor *t) {
  int32_t dtype = (int32_t)TF_TensorType(t);
  int32_t rank = TF_NumDims(t);
  int64_t count = 1;
  fwrite(&dtype, 4, 1, f);
  fwrite(&rank, 4, 1, f);
  for (int i = 0; i < rank; ++i) {
    int64_t d = TF_Dim(t, i);
    count *= d;
    fwrite(&d, 8, 1, f);
  }
  if (dtype == TF_STRING) {
    const TF_TString *values = (const TF_TString *)TF_TensorData(t);
    for (int64_t i = 0; i < count; ++i) {
      uint64_t n = TF_TString_GetSize(&values[i]);
      fwrite(&n, 8, 1, f);
      fwrite(TF_TString_GetDataPointer(&values[i]), 1, n, f);
    }
    return;
  }
  uint64_t nbytes = TF_TensorByteSize(t);
  fwrite(&nbytes, 8, 1, f);
  fwrite(TF_TensorData(t), 1, nbytes, f);
}

int main(int argc, char **argv) {
  if (argc != 4) fail("usage", "run_signature EXPORT_DIR REQUEST_FILE RESPONSE_FILE");
  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  const char *tags[] = {"serve"};
  TF_Session *session = TF_LoadSessionFromSavedModel(options, NULL, argv[1], tags, 1, graph, NULL, status);
  if (TF_GetCode(status) != TF_OK) fail("loading the SavedModel", TF_Message(status));

  FILE *req = fopen(argv[2], "rb");
  if (!req) fail("cannot open the request file", argv[2]);
  FILE *res = fopen(argv[3], "wb");
  if (!res) fail("cannot write the response file", argv[3]);
  char magic[8];
  read_exact(req, magic, 8);
  if (memcmp(magic, "MVKEREQ2", 8) != 0) fail("request", "not a request file");
  uint32_t n_runs = read_u32(req);
  fwrite("MVKERES2", 1, 8, res);
  fwrite(&n_runs, 4, 1, res);
  for (uint32_t run = 0; run < n_runs; ++run) {
    uint32_t n_in = read_u32(req);
    TF_Output *inputs = calloc(n_in ? n_in : 1, sizeof(TF_Output));
    TF_Tensor **input_values = calloc(n_in ? n_in : 1, sizeof(TF_Tensor *));
    for (uint32_t i = 0; i < n_in; ++i) {
      inputs[i] = graph_output(graph, req);
      input_values[i] = read_tensor(req);
    }
    uint32_t n_out = read_u32(req);
    TF_Output *outputs = calloc(n_out ? n_out : 1, sizeof(TF_Output));
    TF_Tensor **output_values = calloc(n_out ? n_out : 1, sizeof(TF_Tensor *));
    for (uint32_t i = 0; i < n_out; ++i) outputs[i] = graph_output(graph, req);
    TF_SessionRun(session, NULL, inputs, input_values, (int)n_in, outputs, output_values, (int)n_out, NULL, 0,
                  NULL, status);
    if (TF_GetCode(status) != TF_OK) fail("running the signature", TF_Message(status));
    fwrite(&n_out, 4, 1, res);
    for (uint32_t i = 0; i < n_out; ++i) write_tensor(res, output_values[i]);
    for (uint32_t i = 0; i < n_in; ++i) TF_DeleteTensor(input_values[i]);
    for (uint32_t i = 0; i < n_out; ++i) TF_DeleteTensor(output_values[i]);
    free(inputs);
    free(input_values);
    free(outputs);
    free(output_values);
  }
  fclose(req);
  if (fclose(res) != 0) fail("writing the response file", argv[3]);

  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteSessionOptions(options);
  TF_DeleteGraph(graph);
  TF_DeleteStatus(status);
  return 0;
}
