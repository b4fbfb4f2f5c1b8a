package moe4j.nn;

/**
 * Where attention normalises its queries and keys (RMSNorm) before the rotary embedding, if at all.
 * Qwen3 normalises each head's vector ({@link #PER_HEAD}, a weight of head_dim); OLMoE the whole
 * projection over all heads at once ({@link #ALL_HEADS}, a weight of heads·head_dim).
 */
public enum QkNorm {
    NONE, PER_HEAD, ALL_HEADS
}
