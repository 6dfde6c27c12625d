/* config.json of a Hugging Face checkpoint -> moeLayerConfig_t, per model family. */
#ifndef MOE_IO_HF_CONFIG_H
#define MOE_IO_HF_CONFIG_H

#include <stdint.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  MOE_FAMILY_MIXTRAL = 0,
  MOE_FAMILY_QWEN3_MOE = 1,
  MOE_FAMILY_OLMOE = 2,
  MOE_FAMILY_DEEPSEEK_V3 = 3,
  MOE_FAMILY_GPT_OSS = 4,
  MOE_FAMILY_DEEPSEEK_V2 = 5,
} moe_family;

typedef struct {
  moe_family family;
  char model_type[32];
  int32_t num_layers;         /* num_hidden_layers */
  int has_router_bias;        /* gpt-oss */
  int has_selection_bias;     /* DeepSeek-V3 e_score_correction_bias */
  moeLayerConfig_t cfg;       /* dtype: from torch_dtype when present, else bf16; the loader
                                 replaces it with the checkpoint's actual dtype */
} moe_hf_config;

/* Reads dir/config.json and describes MoE layer layer_index.
 * Returns: moeSuccess; moeErrorIo (no config.json); moeErrorFormat (invalid JSON, a missing or
 *          mistyped key: the message names config.json and the key); moeErrorInvalidArgument
 *          (layer_index outside [0, num_hidden_layers)); moeErrorInvalidConfig (a dense layer);
 *          moeErrorNotSupported (an unknown model_type, activation or routing method). */
moeStatus_t moe_hf_config_read(const char *dir, int32_t layer_index, moe_hf_config *out);

#ifdef __cplusplus
}
#endif
#endif
