package ai.edgekit.demo

import android.content.Context
import android.os.Build
import android.os.Debug
import java.io.File
import java.io.IOException

const val REPORT_FILE = "edgekit_report.json"
private const val SYNTHETIC_SIDE = 256

/**
 * Benchmark mode: load the bundled model (timed), [warmup] untimed runs, then [runs] timed runs of forward()
 * on the preprocessed synthetic image, every sample kept in run order. Call on a background thread.
 */
fun runBenchmark(context: Context, bundle: EdgekitBundle, runs: Int, warmup: Int, threads: Int): LatencyReport {
    require(runs >= 1) { "runs $runs: give 1 or more" }
    require(warmup >= 0) { "warmup $warmup: give 0 or more" }
    require(threads >= 0) { "threads $threads: give 0 (the runtime's default) or more" }
    val file = modelFile(context, bundle)  // copied before the clock starts
    val x = preprocess(syntheticImage(SYNTHETIC_SIDE, SYNTHETIC_SIDE), SYNTHETIC_SIDE, SYNTHETIC_SIDE, bundle.preprocessing)

    Runtime.getRuntime().gc()
    val heap0 = Debug.getNativeHeapAllocatedSize()
    val t0 = System.nanoTime()
    val runner = openRunner(file, bundle, threads)
    val loadMs = (System.nanoTime() - t0) / 1e6
    var heapPeak = Debug.getNativeHeapAllocatedSize()
    val samples = runner.use { r ->
        r.setInput(x)
        repeat(warmup) { r.forward() }
        heapPeak = maxOf(heapPeak, Debug.getNativeHeapAllocatedSize())
        timeRuns(runs) { r.forward() }.also { heapPeak = maxOf(heapPeak, Debug.getNativeHeapAllocatedSize()) }
    }
    val peakMb = (heapPeak - heap0).coerceAtLeast(0L) / (1024.0 * 1024.0)

    return LatencyReport(
        created = isoNow(),
        device = DeviceInfo(
            name = bundle.deviceName,
            model = "${Build.MANUFACTURER} ${Build.MODEL}",
            os = "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
        ),
        runtime = RuntimeInfo(bundle.runtime, runtimeVersion(bundle.runtime), bundle.delegate),
        artifact = bundle.artifact,
        threads = threads,
        warmup = warmup,
        samplesMs = samples.map { roundTo(it, 4) },
        loadMs = roundTo(loadMs, 2),
        peakMemoryMb = roundTo(peakMb, 2),
        notes = listOf(
            "measured by the edgekit Android demo app (benchmark mode): $warmup warm-up runs, then $runs timed " +
                "runs of forward() alone on a fixed synthetic ${SYNTHETIC_SIDE}x$SYNTHETIC_SIDE image " +
                "preprocessed to ${bundle.input.shape.toList()}; camera stopped",
            "load_ms: creating the ${bundle.runtime} runner from the model file (the copy out of the APK excluded)",
            "peak_memory_mb: growth of the native heap (Debug.getNativeHeapAllocatedSize) from before loading to " +
                "its highest reading after load, warm-up and timed runs; memory-mapped model data is not counted",
        ),
    )
}

fun runtimeVersion(runtime: String): String = when (runtime) {
    "executorch" -> BuildConfig.EXECUTORCH_VERSION
    "tflite" -> BuildConfig.LITERT_VERSION
    else -> "unknown"
}

/** Writes [report] to getExternalFilesDir(null)/edgekit_report.json (adb-pullable), else to filesDir. */
fun writeReport(context: Context, report: LatencyReport): File {
    val dir = context.getExternalFilesDir(null) ?: context.filesDir
    val file = File(dir, REPORT_FILE)
    val tmp = File(dir, "$REPORT_FILE.tmp")
    tmp.writeText(report.toJson())
    if (!tmp.renameTo(file)) throw IOException("could not write $file")
    return file
}
