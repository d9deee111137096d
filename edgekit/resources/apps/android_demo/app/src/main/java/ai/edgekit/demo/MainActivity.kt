package ai.edgekit.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Matrix
import android.os.Bundle
import android.util.Log
import android.widget.Button
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

private const val TAG = "edgekit"

/**
 * Camera classification (CameraX preview + analysis: top-3 labels and the frame's inference time) and
 * benchmark mode (the button, or `am start ... --ez benchmark true --ei runs 50 --ei warmup 10 --ei threads 4`).
 */
class MainActivity : AppCompatActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var resultText: TextView
    private lateinit var statusText: TextView
    private lateinit var benchmarkButton: Button

    /** One thread runs every inference, camera frames and benchmark alike, so they never overlap. */
    private val inference: ExecutorService = Executors.newSingleThreadExecutor()
    private var bundle: EdgekitBundle? = null
    private var labels: List<String> = emptyList()
    private var cameraProvider: ProcessCameraProvider? = null
    private var cameraRunner: ModelRunner? = null  // touched on the inference thread only
    private var cameraError: String? = null        // idem: set once the camera runner fails, to stop retrying
    @Volatile private var benchmarking = false

    private val cameraPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else statusText.setText(R.string.no_camera)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        resultText = findViewById(R.id.result_text)
        statusText = findViewById(R.id.status_text)
        benchmarkButton = findViewById(R.id.benchmark_button)

        val b = try {
            EdgekitBundle.parse(assets.open("edgekit_bundle.json").bufferedReader().use { it.readText() })
        } catch (e: Exception) {
            Log.e(TAG, "no usable edgekit_bundle.json", e)
            statusText.text = getString(R.string.no_bundle, e.message)
            benchmarkButton.isEnabled = false
            return
        }
        bundle = b
        labels = try {
            assets.open(b.labelsFile).bufferedReader().use { r -> r.readLines().map { it.trim() }.dropLastWhile { it.isEmpty() } }
        } catch (e: Exception) {
            emptyList()
        }
        statusText.text = getString(R.string.model_info, b.artifact.name, b.runtime, b.input.shape.toList().toString())
        benchmarkButton.setOnClickListener { startBenchmark(b.runs, b.warmup, b.threads) }
        // a recreated activity (savedInstanceState) does not rerun the benchmark its intent asked for
        val benchmarkAsked = savedInstanceState == null && handleBenchmarkIntent(intent)
        if (!benchmarkAsked) ensureCamera()
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        setIntent(intent)
        handleBenchmarkIntent(intent)
    }

    override fun onDestroy() {
        super.onDestroy()
        inference.execute { cameraRunner?.close(); cameraRunner = null }
        inference.shutdown()
    }

    /** `--ez benchmark true [--ei runs N] [--ei warmup W] [--ei threads T]`: run the benchmark; true if asked. */
    private fun handleBenchmarkIntent(intent: Intent?): Boolean {
        val b = bundle ?: return false
        if (intent == null || !intent.getBooleanExtra("benchmark", false)) return false
        startBenchmark(
            runs = intent.getIntExtra("runs", b.runs),
            warmup = intent.getIntExtra("warmup", b.warmup),
            threads = intent.getIntExtra("threads", b.threads),
        )
        return true
    }

    private fun cameraGranted() =
        ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED

    private fun ensureCamera() {
        if (cameraGranted()) startCamera() else cameraPermission.launch(Manifest.permission.CAMERA)
    }

    private fun startCamera() {
        cameraProvider?.let { bindCamera(it); return }
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            cameraProvider = provider
            if (!benchmarking) bindCamera(provider)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun bindCamera(provider: ProcessCameraProvider) {
        if (isFinishing || isDestroyed) return
        val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
        val analysis = ImageAnalysis.Builder()
            .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
            .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
            .build()
            .also { it.setAnalyzer(inference) { image -> analyze(image) } }
        try {
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        } catch (e: Exception) {
            Log.e(TAG, "camera", e)
            statusText.text = getString(R.string.camera_failed, e.message)
        }
    }

    /** One camera frame: preprocess, forward (timed), softmax, top 3. Runs on the inference thread. */
    private fun analyze(image: ImageProxy) {
        image.use {
            val b = bundle
            if (b == null || benchmarking || cameraError != null) return
            try {
                val runner = cameraRunner ?: openRunner(modelFile(this, b), b, b.threads).also { cameraRunner = it }
                val frame = upright(image.toBitmap(), image.imageInfo.rotationDegrees)
                val pixels = IntArray(frame.width * frame.height)
                frame.getPixels(pixels, 0, frame.width, 0, 0, frame.width, frame.height)
                runner.setInput(preprocess(pixels, frame.width, frame.height, b.preprocessing))
                val t0 = System.nanoTime()
                runner.forward()
                val ms = (System.nanoTime() - t0) / 1e6
                val top = topK(softmax(runner.output()), 3)
                val text = top.joinToString("\n") { (i, p) ->
                    String.format(Locale.US, "%5.1f%%  %s", p * 100, labels.getOrElse(i) { "class $i" })
                } + String.format(Locale.US, "\n%.2f ms", ms)
                runOnUiThread { resultText.text = text }
            } catch (e: Exception) {
                Log.e(TAG, "camera inference", e)
                cameraError = e.message ?: e.toString()
                runOnUiThread { statusText.text = getString(R.string.inference_failed, cameraError) }
            }
        }
    }

    private fun upright(bitmap: Bitmap, degrees: Int): Bitmap {
        if (degrees == 0) return bitmap
        val m = Matrix().apply { postRotate(degrees.toFloat()) }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, true)
    }

    /** Stops the camera, runs the benchmark on the inference thread, writes and shows the report. */
    private fun startBenchmark(runs: Int, warmup: Int, threads: Int) {
        val b = bundle ?: return
        if (benchmarking) return
        benchmarking = true
        benchmarkButton.isEnabled = false
        resultText.text = ""
        statusText.text = getString(R.string.benchmark_running, warmup, runs, threads)
        cameraProvider?.unbindAll()
        inference.execute {
            cameraRunner?.close()  // the benchmark loads its own copy: load time and memory are its own
            cameraRunner = null
            val message = try {
                val report = runBenchmark(this, b, runs, warmup, threads)
                val file = writeReport(this, report)
                Log.i(TAG, "benchmark: median ${report.summary.median} ms over $runs runs; report $file")
                getString(R.string.benchmark_done, report.summary.median, report.summary.p90, report.loadMs ?: 0.0, file.absolutePath)
            } catch (e: Exception) {
                Log.e(TAG, "benchmark", e)
                getString(R.string.benchmark_failed, e.message ?: e.toString())
            }
            runOnUiThread {
                benchmarking = false
                if (isDestroyed) return@runOnUiThread
                statusText.text = message
                benchmarkButton.isEnabled = true
                if (cameraGranted()) startCamera()  // no permission dialog over the result of an adb-started run
            }
        }
    }
}
