import MoEModels
import MoEEval

/// The run table's speed columns: the one place the pipeline calls `Speed.measure`, on every evaluated model
/// at once (the original and each stage's output), under the benchmark protocol: 5 alternating rounds, medians.
enum SpeedColumns {
    /// Median prefill and decode tokens per second of each model, in order.
    static func measure(_ models: [CausalLM]) -> [(prefill: Double, decode: Double)] {
        guard !models.isEmpty else { return [] }
        return Speed.measure(models, rounds: 5).map { ($0.prefillTokensPerSecond, $0.decodeTokensPerSecond) }
    }
}
