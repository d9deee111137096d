import Foundation

/// Summary statistics of latency samples (ms), computed the way edgekit's Python side does
/// (`edgekit/profile/timing.py`): percentiles by linear interpolation between closest ranks,
/// numpy's default and `statistics.quantiles(method="inclusive")`.
struct LatencyStats: Equatable {
    let min: Double
    let median: Double
    let mean: Double
    let p90: Double
    let iqr: Double

    /// nil when there are no samples.
    init?(samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        min = sorted[0]
        median = Stats.percentile(sorted: sorted, 50)
        mean = samples.reduce(0, +) / Double(samples.count)
        p90 = Stats.percentile(sorted: sorted, 90)
        iqr = Stats.percentile(sorted: sorted, 75) - Stats.percentile(sorted: sorted, 25)
    }
}

enum Stats {
    /// The `p`-th percentile (0...100) of ascending `sorted` values: the value at rank p/100 * (n - 1),
    /// interpolated linearly between the two neighbouring samples.
    static func percentile(sorted: [Double], _ p: Double) -> Double {
        precondition(!sorted.isEmpty, "percentile of no samples")
        let rank = Swift.min(Swift.max(p, 0), 100) / 100 * Double(sorted.count - 1)
        let lower = Int(rank.rounded(.down))
        let upper = Swift.min(lower + 1, sorted.count - 1)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * (rank - Double(lower))
    }

    /// `value` rounded to `places` decimals (the report keeps 4, like `edgekit profile`).
    static func rounded(_ value: Double, places: Int = 4) -> Double {
        let factor = pow(10, Double(places))
        return (value * factor).rounded() / factor
    }
}
