package ai.edgekit.demo

import android.content.Context
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.Closeable
import java.io.File
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** A loaded model. Not thread-safe: the app uses each runner from its one inference thread. */
interface ModelRunner : Closeable {
    /** Sets the input from preprocessed floats (NCHW), quantizing them where the model takes int8/uint8. */
    fun setInput(x: FloatArray)

    /** Runs the model once on the input: the only call the benchmark times. */
    fun forward()

    /** The first output of the last forward(), as floats (dequantized where the model gives int8/uint8). */
    fun output(): FloatArray
}

/** Loads the bundled model from [file] (see [modelFile]) with [threads] threads (0: the runtime's default). */
fun openRunner(file: File, bundle: EdgekitBundle, threads: Int): ModelRunner = when (bundle.runtime) {
    "executorch" -> ExecuTorchRunner(file, bundle, threads)
    "tflite" -> LiteRtRunner(file, threads)
    else -> throw IllegalArgumentException("unknown runtime ${bundle.runtime}")
}

/**
 * The model as a file in filesDir (ExecuTorch's Module.load takes a path, not an asset), copied from the
 * assets once per artifact: a stamp file keeps the sha256 of the copy.
 */
fun modelFile(context: Context, bundle: EdgekitBundle): File {
    val file = File(context.filesDir, bundle.modelFile)
    val stamp = File(context.filesDir, bundle.modelFile + ".sha256")
    val sha = bundle.artifact.sha256
    if (file.isFile && stamp.isFile && stamp.readText().trim() == sha) return file
    val part = File(context.filesDir, bundle.modelFile + ".part")
    context.assets.open(bundle.modelFile).use { src -> part.outputStream().use { src.copyTo(it, 1 shl 16) } }
    if (!part.renameTo(file)) throw IOException("could not move $part to $file")
    stamp.writeText(sha)
    return file
}

class ExecuTorchRunner(file: File, private val bundle: EdgekitBundle, threads: Int) : ModelRunner {
    private val module: Module = Module.load(file.absolutePath, Module.LOAD_MODE_MMAP, threads)
    private var input: EValue? = null
    private var result: EValue? = null

    init {
        // load forward() now rather than lazily in the first call, so load time is load time
        val status = module.loadMethod("forward")
        if (status != 0) {
            module.destroy()
            throw IllegalStateException("ExecuTorch could not load forward() of ${file.name} (error 0x%x)".format(status))
        }
    }

    override fun setInput(x: FloatArray) {
        val spec = bundle.input
        require(x.size.toLong() == spec.numel) { "input has ${x.size} values, the model takes ${spec.shape.toList()}" }
        val tensor = when (spec.dtype) {
            "int8" -> Tensor.fromBlob(quantize(x, spec.quant!!, unsigned = false), spec.shape)
            "uint8" -> Tensor.fromBlobUnsigned(quantize(x, spec.quant!!, unsigned = true), spec.shape)
            else -> Tensor.fromBlob(x, spec.shape)
        }
        input = EValue.from(tensor)
    }

    override fun forward() {
        val outputs = module.forward(checkNotNull(input) { "setInput() before forward()" })
        check(outputs.isNotEmpty()) { "forward() returned no outputs" }
        result = outputs[0]
    }

    override fun output(): FloatArray {
        val t = checkNotNull(result) { "forward() before output()" }.toTensor()
        val spec = bundle.output
        return when (spec.dtype) {
            "int8" -> dequantize(t.dataAsByteArray, spec.quant!!, unsigned = false)
            "uint8" -> dequantize(t.dataAsUnsignedByteArray, spec.quant!!, unsigned = true)
            else -> t.dataAsFloatArray
        }
    }

    override fun close() = module.destroy()
}

/** LiteRT's Interpreter; the input and output types and quantization come from the model's own tensors. */
class LiteRtRunner(file: File, threads: Int) : ModelRunner {
    private val interpreter: Interpreter
    private val inType: DataType
    private val outType: DataType
    private val inQuant: Quant
    private val outQuant: Quant
    private val inCount: Int
    private val outCount: Int
    private val inBuf: ByteBuffer
    private val outBuf: ByteBuffer

    init {
        val options = Interpreter.Options().setUseXNNPACK(true)
        if (threads > 0) options.setNumThreads(threads)
        interpreter = Interpreter(file, options)
        val inT = interpreter.getInputTensor(0)
        val outT = interpreter.getOutputTensor(0)
        inType = inT.dataType()
        outType = outT.dataType()
        inQuant = inT.quantizationParams().let { Quant(it.scale, it.zeroPoint) }
        outQuant = outT.quantizationParams().let { Quant(it.scale, it.zeroPoint) }
        inCount = inT.numElements()
        outCount = outT.numElements()
        inBuf = ByteBuffer.allocateDirect(inT.numBytes()).order(ByteOrder.nativeOrder())
        outBuf = ByteBuffer.allocateDirect(outT.numBytes()).order(ByteOrder.nativeOrder())
    }

    override fun setInput(x: FloatArray) {
        require(x.size == inCount) { "input has ${x.size} values, the model takes $inCount" }
        inBuf.rewind()
        when (inType) {
            DataType.FLOAT32 -> inBuf.asFloatBuffer().put(x)
            DataType.INT8 -> inBuf.put(quantize(x, checkQuant(inQuant, "input"), unsigned = false))
            DataType.UINT8 -> inBuf.put(quantize(x, checkQuant(inQuant, "input"), unsigned = true))
            else -> throw IllegalStateException("the app does not feed $inType inputs")
        }
        inBuf.rewind()
    }

    override fun forward() {
        inBuf.rewind()
        outBuf.rewind()
        interpreter.run(inBuf, outBuf)
    }

    override fun output(): FloatArray {
        outBuf.rewind()
        return when (outType) {
            DataType.FLOAT32 -> FloatArray(outCount).also { outBuf.asFloatBuffer().get(it) }
            DataType.INT8 -> dequantize(ByteArray(outCount).also { outBuf.get(it) }, checkQuant(outQuant, "output"), false)
            DataType.UINT8 -> dequantize(ByteArray(outCount).also { outBuf.get(it) }, checkQuant(outQuant, "output"), true)
            else -> throw IllegalStateException("the app does not read $outType outputs")
        }
    }

    private fun checkQuant(q: Quant, what: String): Quant =
        q.also { check(it.scale != 0f) { "the model's $what is quantized but has no scale" } }

    override fun close() = interpreter.close()
}
