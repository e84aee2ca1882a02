import MoEModels
import MoEEval

/// The run table's speed columns: the one place the pipeline calls `Speed.measure`, on every evaluated model
/// at once (the original and each stage's output, runs interleaved so machine noise hits them alike).
enum SpeedColumns {
    /// Prefill and decode tokens per second of each model, in order.
    static func measure(_ models: [CausalLM]) -> [(prefill: Double, decode: Double)] {
        guard !models.isEmpty else { return [] }
        return Speed.measure(models, repeats: 3).map { ($0.prefillTokensPerSecond, $0.decodeTokensPerSecond) }
    }
}
