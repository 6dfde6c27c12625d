#include "ckpt_writer.h"

#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>

#include <stdlib.h>

#include "core/dtype.h"  // header-only scalar conversions (bf16/f16 <-> f32)

namespace moe_io_test {

TempDir::TempDir() {
  const char *base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/moe_io_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

static const char *DtypeName(moeDtype_t d) {
  return d == moeFloat32 ? "F32" : d == moeFloat16 ? "F16" : "BF16";
}

static float RoundTo(float v, moeDtype_t d) {
  uint32_t h;  // room for any dtype
  if (d == moeFloat32) return v;
  moe_store_f32(&h, d, 0, v);
  return moe_load_f32(&h, d, 0);
}

Tensor MakeTensor(const std::string &name, std::vector<int64_t> shape, const float *values,
                  moeDtype_t dtype) {
  size_t n = 1;
  for (int64_t d : shape) n *= (size_t)d;
  Tensor t{name, DtypeName(dtype), std::move(shape), std::string()};
  t.bytes.resize(n * moe_dtype_size(dtype));
  for (size_t i = 0; i < n; ++i) moe_store_f32(&t.bytes[0], dtype, i, values[i]);
  return t;
}

void Layout(const std::vector<Tensor> &tensors, std::vector<Entry> *entries, std::string *data) {
  entries->clear();
  data->clear();
  for (const Tensor &t : tensors) {
    uint64_t b = data->size();
    data->append(t.bytes);
    entries->push_back(Entry{t.name, t.dtype, t.shape, b, (uint64_t)data->size()});
  }
}

std::string HeaderJson(const std::vector<Entry> &entries) {
  std::ostringstream os;
  os << "{\"__metadata__\":{\"format\":\"pt\"}";
  for (const Entry &e : entries) {
    os << ",\"" << e.name << "\":{\"dtype\":\"" << e.dtype << "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) os << (i ? "," : "") << e.shape[i];
    os << "],\"data_offsets\":[" << e.begin << "," << e.end << "]}";
  }
  os << "}";
  std::string h = os.str();
  while (h.size() % 8) h += ' ';
  return h;
}

std::string FileBytes(const std::string &header, const std::string &data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = (char)((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Serialize(const std::vector<Tensor> &tensors) {
  std::vector<Entry> entries;
  std::string data;
  Layout(tensors, &entries, &data);
  return FileBytes(HeaderJson(entries), data);
}

void WriteFile(const std::string &path, const std::string &bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), (std::streamsize)bytes.size());
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string ReadFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// ---- one MoE layer -------------------------------------------------------------------------------

moeNaiveLayer Weights::Naive() const {
  moeNaiveLayer n;
  memset(&n, 0, sizeof n);
  auto p = [](const std::vector<float> &v) { return v.empty() ? nullptr : v.data(); };
  n.cfg = cfg;
  n.router_weight = p(router);
  n.router_bias = p(router_bias);
  n.selection_bias = p(selection_bias);
  n.gate_up = p(gate_up);
  n.down = p(down);
  n.gate_up_bias = p(gate_up_bias);
  n.down_bias = p(down_bias);
  n.shared_gate_up = p(shared_gate_up);
  n.shared_down = p(shared_down);
  return n;
}

moeLayerConfig_t ExpectedConfig(const Spec &s) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  c.hidden = s.H;
  c.intermediate = s.I;
  c.num_experts = s.E;
  c.top_k = s.k;
  c.dtype = s.dtype;
  c.shared_intermediate = s.I;
  switch (s.family) {
    case Family::Mixtral: c.routing = moeRoutingTopKSoftmax; break;
    case Family::Qwen3Moe: c.routing = moeRoutingSoftmaxTopK; c.norm_topk_prob = 1; break;
    case Family::Olmoe: c.routing = moeRoutingSoftmaxTopK; c.norm_topk_prob = 0; break;
    case Family::DeepSeekV3:
      c.routing = moeRoutingSigmoidGroupTopK;
      c.norm_topk_prob = 1;
      c.n_group = 4;
      c.topk_group = 2;
      c.routed_scaling_factor = 2.5f;
      c.num_shared_experts = 1;        // n_shared_experts = 2 merged into one, as HF does
      c.shared_intermediate = 2 * s.I;
      break;
    case Family::DeepSeekV2:
      c.routing = moeRoutingSoftmaxGroupTopK;
      c.norm_topk_prob = 0;
      c.n_group = 4;
      c.topk_group = 2;
      c.routed_scaling_factor = 16.0f;
      c.num_shared_experts = 1;
      c.shared_intermediate = 2 * s.I;
      break;
    case Family::GptOss:
      c.routing = moeRoutingTopKSoftmax;
      c.activation = moeActivationSwiGLUClamped;
      c.swiglu_alpha = 1.702f;
      c.swiglu_limit = 7.0f;
      c.expert_bias = 1;
      break;
  }
  return c;
}

Weights RandomWeights(const Spec &s, uint64_t seed) {
  Weights w;
  w.cfg = ExpectedConfig(s);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto fill = [&](std::vector<float> &v, size_t n, float scale, moeDtype_t d) {
    v.resize(n);
    for (float &x : v) x = RoundTo(u(rng) * scale, d);
  };
  const size_t H = (size_t)s.H, I = (size_t)s.I, E = (size_t)s.E;
  const float sh = 1.0f / std::sqrt((float)H), si = 1.0f / std::sqrt((float)I);
  fill(w.router, E * H, 2.0f * sh, s.dtype);
  fill(w.gate_up, E * 2 * I * H, 2.0f * sh, s.dtype);
  fill(w.down, E * H * I, 2.0f * si, s.dtype);
  if (s.family == Family::GptOss) {
    fill(w.router_bias, E, 0.5f, s.dtype);
    fill(w.gate_up_bias, E * 2 * I, 0.5f, s.dtype);
    fill(w.down_bias, E * H, 0.5f, s.dtype);
  }
  if (s.family == Family::DeepSeekV3) fill(w.selection_bias, E, 0.3f, moeFloat32);
  if (s.family == Family::DeepSeekV3 || s.family == Family::DeepSeekV2) {
    const size_t Is = (size_t)w.cfg.shared_intermediate;
    fill(w.shared_gate_up, 2 * Is * H, 2.0f * sh, s.dtype);
    fill(w.shared_down, H * Is, 1.0f / std::sqrt((float)Is), s.dtype);
  }
  return w;
}

std::map<std::string, std::string> ConfigKeys(const Spec &s) {
  std::map<std::string, std::string> k;
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  k["hidden_size"] = num((double)s.H);
  k["num_hidden_layers"] = num(s.num_layers);
  k["torch_dtype"] = s.dtype == moeFloat32 ? "\"float32\""
                     : s.dtype == moeFloat16 ? "\"float16\"" : "\"bfloat16\"";
  k["hidden_act"] = "\"silu\"";
  k["vocab_size"] = "4";
  k["num_experts_per_tok"] = num(s.k);
  switch (s.family) {
    case Family::Mixtral:
      k["model_type"] = "\"mixtral\"";
      k["num_local_experts"] = num(s.E);
      k["intermediate_size"] = num((double)s.I);
      break;
    case Family::Qwen3Moe:
      k["model_type"] = "\"qwen3_moe\"";
      k["num_experts"] = num(s.E);
      k["moe_intermediate_size"] = num((double)s.I);
      k["intermediate_size"] = num((double)(3 * s.I)); // the dense MLP's: must not be used
      k["norm_topk_prob"] = "true";
      k["decoder_sparse_step"] = "1";
      k["mlp_only_layers"] = "[]";
      break;
    case Family::Olmoe:
      k["model_type"] = "\"olmoe\"";
      k["num_experts"] = num(s.E);
      k["intermediate_size"] = num((double)s.I);
      k["norm_topk_prob"] = "false";
      break;
    case Family::DeepSeekV3:
      k["model_type"] = "\"deepseek_v3\"";
      k["n_routed_experts"] = num(s.E);
      k["moe_intermediate_size"] = num((double)s.I);
      k["intermediate_size"] = num((double)(5 * s.I)); // dense layers'
      k["n_group"] = "4";
      k["topk_group"] = "2";
      k["routed_scaling_factor"] = "2.5";
      k["n_shared_experts"] = "2";
      k["norm_topk_prob"] = "true";
      k["scoring_func"] = "\"sigmoid\"";
      k["topk_method"] = "\"noaux_tc\"";
      k["first_k_dense_replace"] = num(s.first_dense);
      k["moe_layer_freq"] = "1";
      break;
    case Family::DeepSeekV2:
      k["model_type"] = "\"deepseek_v2\"";
      k["n_routed_experts"] = num(s.E);
      k["moe_intermediate_size"] = num((double)s.I);
      k["intermediate_size"] = num((double)(5 * s.I));
      k["n_group"] = "4";
      k["topk_group"] = "2";
      k["routed_scaling_factor"] = "16.0";
      k["n_shared_experts"] = "2";
      k["norm_topk_prob"] = "false";
      k["scoring_func"] = "\"softmax\"";
      k["topk_method"] = "\"group_limited_greedy\"";
      k["first_k_dense_replace"] = num(s.first_dense);
      k["moe_layer_freq"] = "1";
      break;
    case Family::GptOss:
      k["model_type"] = "\"gpt_oss\"";
      k["num_local_experts"] = num(s.E);
      k["experts_per_token"] = num(s.k);
      k["intermediate_size"] = num((double)s.I);
      k["swiglu_limit"] = "7.0";
      k.erase("hidden_act");
      break;
  }
  return k;
}

std::string ConfigJson(const std::map<std::string, std::string> &keys) {
  std::string out = "{\n";
  bool first = true;
  for (const auto &kv : keys) {
    out += (first ? "  \"" : ",\n  \"") + kv.first + "\": " + kv.second;
    first = false;
  }
  return out + "\n}\n";
}

std::vector<Tensor> LayerTensors(const Spec &s, const Weights &w) {
  const int64_t H = s.H, I = s.I, E = s.E;
  const moeDtype_t d = s.dtype;
  const std::string L = "model.layers." + std::to_string(s.layer) + ".";
  const std::string P = L + (s.family == Family::Mixtral && s.scheme == Scheme::PerExpert
                                 ? "block_sparse_moe." : "mlp.");
  std::vector<Tensor> t;
  std::vector<float> small((size_t)(H * H), 0.25f);
  t.push_back(MakeTensor("model.embed_tokens.weight", {4, H}, small.data(), d));
  t.push_back(MakeTensor(L + "input_layernorm.weight", {H}, small.data(), d));
  t.push_back(MakeTensor(L + "self_attn.q_proj.weight", {H, H}, small.data(), d));
  if (s.family == Family::GptOss) {
    t.push_back(MakeTensor(P + "router.weight", {E, H}, w.router.data(), d));
    t.push_back(MakeTensor(P + "router.bias", {E}, w.router_bias.data(), d));
  } else {
    t.push_back(MakeTensor(P + "gate.weight", {E, H}, w.router.data(), d));
  }
  if (s.family == Family::DeepSeekV3)
    t.push_back(MakeTensor(P + "gate.e_score_correction_bias", {E}, w.selection_bias.data(),
                           moeFloat32));
  if (s.family == Family::DeepSeekV3 || s.family == Family::DeepSeekV2) {
    const int64_t Is = w.cfg.shared_intermediate;
    const float *sg = w.shared_gate_up.data();
    t.push_back(MakeTensor(P + "shared_experts.gate_proj.weight", {Is, H}, sg, d));
    t.push_back(MakeTensor(P + "shared_experts.up_proj.weight", {Is, H}, sg + Is * H, d));
    t.push_back(MakeTensor(P + "shared_experts.down_proj.weight", {H, Is},
                           w.shared_down.data(), d));
  }
  if (s.scheme == Scheme::PerExpert) {
    const bool mix = s.family == Family::Mixtral;
    for (int64_t e = 0; e < E; ++e) {
      const std::string X = P + "experts." + std::to_string(e) + ".";
      const float *g = &w.gate_up[(size_t)(e * 2 * I * H)], *dn = &w.down[(size_t)(e * H * I)];
      t.push_back(MakeTensor(X + (mix ? "w1.weight" : "gate_proj.weight"), {I, H}, g, d));
      t.push_back(MakeTensor(X + (mix ? "w3.weight" : "up_proj.weight"), {I, H}, g + I * H, d));
      t.push_back(MakeTensor(X + (mix ? "w2.weight" : "down_proj.weight"), {H, I}, dn, d));
    }
  } else if (s.scheme == Scheme::StackedV5) {
    t.push_back(MakeTensor(P + "experts.gate_up_proj", {E, 2 * I, H}, w.gate_up.data(), d));
    t.push_back(MakeTensor(P + "experts.down_proj", {E, H, I}, w.down.data(), d));
  } else {  // gpt-oss: [E, H, 2I] interleaved (even = gate), down [E, I, H], biases
    std::vector<float> gu((size_t)(E * H * 2 * I)), dn((size_t)(E * I * H));
    std::vector<float> gub((size_t)(E * 2 * I));
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t i = 0; i < I; ++i) {
        for (int64_t h = 0; h < H; ++h) {
          const float *x = &w.gate_up[(size_t)(e * 2 * I * H)];
          gu[(size_t)((e * H + h) * 2 * I + 2 * i)] = x[i * H + h];
          gu[(size_t)((e * H + h) * 2 * I + 2 * i + 1)] = x[(I + i) * H + h];
          dn[(size_t)((e * I + i) * H + h)] = w.down[(size_t)((e * H + h) * I + i)];
        }
        gub[(size_t)(e * 2 * I + 2 * i)] = w.gate_up_bias[(size_t)(e * 2 * I + i)];
        gub[(size_t)(e * 2 * I + 2 * i + 1)] = w.gate_up_bias[(size_t)(e * 2 * I + I + i)];
      }
    }
    t.push_back(MakeTensor(P + "experts.gate_up_proj", {E, H, 2 * I}, gu.data(), d));
    t.push_back(MakeTensor(P + "experts.gate_up_proj_bias", {E, 2 * I}, gub.data(), d));
    t.push_back(MakeTensor(P + "experts.down_proj", {E, I, H}, dn.data(), d));
    t.push_back(MakeTensor(P + "experts.down_proj_bias", {E, H}, w.down_bias.data(), d));
  }
  return t;
}

int ShardOf(const Spec &s, const std::string &name) {
  if (s.shards <= 1) return 0;
  static const std::regex re("\\.experts\\.([0-9]+)\\.");
  std::smatch m;
  if (!std::regex_search(name, m, re)) return 0;
  int e = std::stoi(m[1].str());
  return 1 + e * (s.shards - 1) / s.E;
}

std::string ShardName(int i, int n) {
  char buf[64];
  snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, n);
  return buf;
}

void WriteCheckpoint(const std::string &dir, const Spec &s, const Weights &w) {
  WriteFile(dir + "/config.json", ConfigJson(ConfigKeys(s)));
  std::vector<Tensor> all = LayerTensors(s, w);
  if (s.shards <= 1) {
    WriteFile(dir + "/model.safetensors", Serialize(all));
    return;
  }
  std::vector<std::vector<Tensor>> parts((size_t)s.shards);
  std::string index = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
  bool first = true;
  for (const Tensor &t : all) {
    int f = ShardOf(s, t.name);
    parts[(size_t)f].push_back(t);
    index += std::string(first ? "" : ",") + "\n  \"" + t.name + "\": \"" +
             ShardName(f, s.shards) + "\"";
    first = false;
  }
  WriteFile(dir + "/model.safetensors.index.json", index + "\n}}\n");
  for (int f = 0; f < s.shards; ++f)
    WriteFile(dir + "/" + ShardName(f, s.shards), Serialize(parts[(size_t)f]));
}

}  // namespace moe_io_test
