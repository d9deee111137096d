package ai.edgekit.demo

import java.math.BigDecimal
import java.math.RoundingMode
import java.time.OffsetDateTime
import java.time.format.DateTimeFormatter
import java.time.temporal.ChronoUnit

const val REPORT_SCHEMA = "edgekit-latency-report/1"

/** The compiled artifact measured: from edgekit_bundle.json's "artifact" plus the input shape. */
data class ArtifactInfo(
    val sha256: String,
    val name: String,
    val bytes: Long,
    val model: String?,
    val quantization: String?,
    val inputShape: List<Long>,
)

data class DeviceInfo(val name: String, val model: String, val os: String)

data class RuntimeInfo(val name: String, val version: String, val delegate: String?)

/**
 * One measurement, written as edgekit's latency report (edgekit/profile/report.schema.json), which
 * `edgekit profile import` reads. The statistics are computed here from [samplesMs], so they always agree.
 */
data class LatencyReport(
    val created: String,
    val device: DeviceInfo,
    val runtime: RuntimeInfo,
    val artifact: ArtifactInfo,
    val threads: Int,
    val warmup: Int,
    val samplesMs: List<Double>,
    val loadMs: Double?,
    val peakMemoryMb: Double?,
    val notes: List<String>,
) {
    val summary: Summary = summarize(samplesMs)

    fun toMap(): Map<String, Any?> = linkedMapOf(
        "schema" to REPORT_SCHEMA,
        "created" to created,
        "device" to linkedMapOf("name" to device.name, "via" to "app", "model" to device.model, "os" to device.os),
        "runtime" to linkedMapOf(
            "name" to runtime.name, "version" to runtime.version,
            "delegate" to runtime.delegate, "compute_units" to null,
        ),
        "artifact" to linkedMapOf(
            "sha256" to artifact.sha256, "name" to artifact.name, "bytes" to artifact.bytes,
            "model" to artifact.model, "quantization" to artifact.quantization, "input_shape" to artifact.inputShape,
        ),
        "threads" to threads,
        "warmup" to warmup,
        "runs" to samplesMs.size,
        "samples_ms" to samplesMs,
        "min_ms" to summary.min,
        "median_ms" to summary.median,
        "mean_ms" to summary.mean,
        "p90_ms" to summary.p90,
        "iqr_ms" to summary.iqr,
        "load_ms" to loadMs,
        "peak_memory_mb" to peakMemoryMb,
        "notes" to notes,
    )

    /** Pretty-printed JSON: two-space indents, arrays on one line, numbers with at most 4 decimals. */
    fun toJson(): String = Json.write(toMap()) + "\n"
}

/** Now, to the second, with the UTC offset as +hh:mm (never "Z"): 2026-11-20T16:42:10+01:00. */
fun isoNow(): String =
    OffsetDateTime.now().truncatedTo(ChronoUnit.SECONDS).format(DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ssxxx"))

/** A small JSON writer for maps, lists, strings, numbers, booleans and null (no Android or library code). */
object Json {
    fun write(value: Any?, indent: String = ""): String = when (value) {
        null -> "null"
        is String -> quote(value)
        is Boolean, is Int, is Long -> value.toString()
        is Double -> number(value)
        is Float -> number(value.toDouble())
        is Map<*, *> -> if (value.isEmpty()) "{}" else value.entries.joinToString(",\n", "{\n", "\n$indent}") { (k, v) ->
            "$indent  ${quote(k.toString())}: ${write(v, "$indent  ")}"
        }
        is List<*> -> value.joinToString(", ", "[", "]") { write(it, indent) }
        else -> throw IllegalArgumentException("cannot write ${value::class.java.name} as JSON")
    }

    /** At most 4 decimals, no exponent, always a decimal point: 1.5, 2.0, 0.0001; NaN and infinities as null. */
    fun number(x: Double): String {
        if (!x.isFinite()) return "null"
        val s = BigDecimal(x.toString()).setScale(4, RoundingMode.HALF_UP).stripTrailingZeros().toPlainString()
        return if ('.' in s) s else "$s.0"
    }

    fun quote(s: String): String = buildString {
        append('"')
        for (c in s) {
            when {
                c == '"' -> append("\\\"")
                c == '\\' -> append("\\\\")
                c == '\n' -> append("\\n")
                c == '\r' -> append("\\r")
                c == '\t' -> append("\\t")
                c < ' ' -> append("\\u%04x".format(c.code))
                else -> append(c)
            }
        }
        append('"')
    }
}
