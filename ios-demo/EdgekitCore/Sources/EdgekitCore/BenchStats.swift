import Foundation

/// The statistics of a set of latency samples, with the estimators edgekit.bench.timing uses,
/// so a phone's row and a host's row mean the same thing: median with a distribution-free 95%
/// confidence interval, p90 from 10 runs and p99 from 100 (below that they would be the
/// maximum), mean, population std, the mean of the middle 80%, and cv = std / mean.
public struct BenchStats: Equatable, Sendable {
    /// Percentiles are reported only where enough samples lie above them.
    public static let minRunsForP90 = 10
    public static let minRunsForP99 = 100
    /// Fraction trimmed from each end for the trimmed mean (and the reliability CV).
    public static let trimProportion = 0.1
    public static let confidence = 0.95

    public let runs: Int
    public let medianMs: Double
    public let medianCI95Ms: (low: Double, high: Double)?
    public let p90Ms: Double?
    public let p99Ms: Double?
    public let meanMs: Double
    public let stdMs: Double
    public let trimmedMeanMs: Double
    public let cv: Double?
    public let minMs: Double
    public let maxMs: Double

    public static func == (a: BenchStats, b: BenchStats) -> Bool {
        a.runs == b.runs && a.medianMs == b.medianMs && a.medianCI95Ms?.low == b.medianCI95Ms?.low
            && a.medianCI95Ms?.high == b.medianCI95Ms?.high && a.p90Ms == b.p90Ms
            && a.p99Ms == b.p99Ms && a.meanMs == b.meanMs && a.stdMs == b.stdMs
            && a.trimmedMeanMs == b.trimmedMeanMs && a.cv == b.cv && a.minMs == b.minMs
            && a.maxMs == b.maxMs
    }

    public static func of(_ samplesMs: [Double]) throws -> BenchStats {
        guard !samplesMs.isEmpty else {
            throw EdgekitCoreError(
                "No latency samples to summarize.", hint: "time at least one run."
            )
        }
        let ordered = samplesMs.sorted()
        let n = ordered.count
        let average = Self.mean(ordered)
        let std = n > 1 ? populationStd(ordered, mean: average) : 0.0
        return BenchStats(
            runs: n,
            medianMs: median(ordered),
            medianCI95Ms: medianConfidenceInterval(ordered),
            p90Ms: n >= minRunsForP90 ? percentile(ordered, 0.90) : nil,
            p99Ms: n >= minRunsForP99 ? percentile(ordered, 0.99) : nil,
            meanMs: average,
            stdMs: std,
            trimmedMeanMs: trimmedMean(ordered),
            cv: average > 0 ? std / average : nil,
            minMs: ordered[0],
            maxMs: ordered[n - 1]
        )
    }

    static func median(_ ordered: [Double]) -> Double {
        let n = ordered.count
        return n % 2 == 1 ? ordered[n / 2] : (ordered[n / 2 - 1] + ordered[n / 2]) / 2
    }

    /// Neumaier-compensated sum: Python's statistics.fmean sums exactly (math.fsum).
    static func mean(_ values: [Double]) -> Double {
        var sum = 0.0, compensation = 0.0
        for value in values {
            let t = sum + value
            compensation += abs(sum) >= abs(value) ? (sum - t) + value : (value - t) + sum
            sum = t
        }
        return (sum + compensation) / Double(values.count)
    }

    static func populationStd(_ values: [Double], mean center: Double) -> Double {
        Self.mean(values.map { ($0 - center) * ($0 - center) }).squareRoot()
    }

    /// Linear interpolation between closest ranks (numpy's default method).
    static func percentile(_ ordered: [Double], _ q: Double) -> Double {
        if ordered.count == 1 { return ordered[0] }
        let position = q * Double(ordered.count - 1)
        let lower = Int(position)
        let upper = min(lower + 1, ordered.count - 1)
        return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - Double(lower))
    }

    /// Mean after dropping 10% of the samples from each end (scipy's trim_mean).
    static func trimmedMean(_ ordered: [Double]) -> Double {
        mean(trimmed(ordered))
    }

    static func trimmed(_ ordered: [Double]) -> [Double] {
        let cut = Int(trimProportion * Double(ordered.count))
        let kept = Array(ordered[cut..<(ordered.count - cut)])
        return kept.isEmpty ? ordered : kept
    }

    /// The order statistics at ranks j and n - j + 1 (1-based), the widest symmetric pair whose
    /// coverage of the median, 1 - 2 P(B <= j - 1) for B ~ Binomial(n, 1/2), is still >= 95%.
    /// Timing samples are skewed, so no normal approximation. nil below 6 samples, where even
    /// the full range covers the median with less than 95%.
    static func medianConfidenceInterval(_ ordered: [Double]) -> (low: Double, high: Double)? {
        let n = ordered.count
        guard n >= 6 else { return nil }
        let tail = (1.0 - confidence) / 2.0
        var cumulative = 0.0
        var dropped = 0
        // Binomial probabilities in log space: 2^-n underflows past n = 1074.
        let logHalfToN = Double(n) * log(0.5)
        for i in 0..<n {
            let logChoose = lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1))
            cumulative += exp(logChoose + logHalfToN)
            if cumulative > tail { break }
            dropped = i + 1
        }
        dropped = max(dropped, 1)
        return (ordered[dropped - 1], ordered[n - dropped])
    }

    /// The spread verdict of edgekit.bench.timing.reliability: why these numbers cannot be
    /// trusted, empty when they can. `roundMediansMs`: the median of each interleaved round. A
    /// sustained run's windows are not rounds: throttling is its `sustained.slowdown`.
    public func unreliableReasons(samplesMs: [Double], roundMediansMs: [Double]) -> [String] {
        var reasons: [String] = []
        let kept = Self.trimmed(samplesMs.sorted())
        let keptMean = Self.mean(kept)
        let trimmedCV = kept.count > 1 && keptMean > 0
            ? Self.populationStd(kept, mean: keptMean) / keptMean : nil
        if let value = samplesMs.isEmpty ? cv : trimmedCV, value > Reliability.maxCV {
            reasons.append("CV \(Self.percent(value)) > \(Self.percent(Reliability.maxCV))")
        }
        if let p90 = p90Ms, p90 > Reliability.maxP90OverP50 * medianMs {
            reasons.append(
                "p90/p50 \(String(format: "%.2f", p90 / medianMs)) > \(Reliability.maxP90OverP50)"
            )
        }
        if roundMediansMs.count > 1, let low = roundMediansMs.min(), let high = roundMediansMs.max() {
            let spread = (high - low) / Self.median(roundMediansMs.sorted())
            if spread > Reliability.maxRoundSpread {
                reasons.append("rounds disagree by \(Self.percent(spread))")
            }
        }
        return reasons
    }

    static func percent(_ fraction: Double) -> String {
        "\(Int((fraction * 100).rounded(.toNearestOrEven)))%"
    }

    /// edgekit.bench.timing's thresholds: on an idle machine a model's runs vary by a few
    /// percent; beyond these the median moves from run to run.
    public enum Reliability {
        public static let maxCV = 0.25
        public static let maxP90OverP50 = 1.5
        public static let maxRoundSpread = 0.25
    }
}
