package ai.edgekit.demo

import java.math.BigDecimal
import java.math.RoundingMode
import kotlin.math.ceil
import kotlin.math.floor

/** Summary statistics of latency samples, in ms. */
data class Summary(
    val min: Double,
    val median: Double,
    val mean: Double,
    val p90: Double,
    val iqr: Double,
)

/**
 * The [p]-th percentile (0..100) of [sorted] (ascending), interpolated linearly between the closest
 * ranks: numpy's default (`method="linear"`) and Python's `statistics.quantiles(method="inclusive")`.
 */
fun percentile(sorted: DoubleArray, p: Double): Double {
    require(sorted.isNotEmpty()) { "no samples" }
    require(p in 0.0..100.0) { "percentile $p is outside 0..100" }
    val pos = p / 100.0 * (sorted.size - 1)
    val lo = floor(pos).toInt()
    val hi = ceil(pos).toInt()
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

/** min, median, mean, p90 and interquartile range (p75 - p25) of [samples]. */
fun summarize(samples: List<Double>): Summary {
    require(samples.isNotEmpty()) { "no samples" }
    val sorted = samples.toDoubleArray().also { it.sort() }
    return Summary(
        min = sorted.first(),
        median = percentile(sorted, 50.0),
        mean = samples.sum() / samples.size,
        p90 = percentile(sorted, 90.0),
        iqr = percentile(sorted, 75.0) - percentile(sorted, 25.0),
    )
}

/** [x] rounded half-up to [digits] decimals (decimal rounding, so 1.00005 -> 1.0001 whatever its binary form). */
fun roundTo(x: Double, digits: Int): Double =
    if (x.isFinite()) BigDecimal(x.toString()).setScale(digits, RoundingMode.HALF_UP).toDouble() else x

/** Milliseconds of each of [runs] calls of [forward], in call order; System.nanoTime around the call alone. */
inline fun timeRuns(runs: Int, forward: () -> Unit): List<Double> {
    val samples = ArrayList<Double>(runs)
    repeat(runs) {
        val t0 = System.nanoTime()
        forward()
        samples.add((System.nanoTime() - t0) / 1e6)
    }
    return samples
}
