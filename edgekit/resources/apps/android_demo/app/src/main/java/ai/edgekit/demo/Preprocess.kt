package ai.edgekit.demo

import kotlin.math.exp
import kotlin.math.floor
import kotlin.math.min

/** edgekit_bundle.json's "preprocessing": what the model expects of an image. */
class Preprocessing(
    val size: Int,
    val mean: FloatArray,
    val std: FloatArray,
    val scale: Float = 1f / 255f,
    val bgr: Boolean = false,
    val nhwc: Boolean = false,
    /** the model normalizes by itself: feed the 0..255 values */
    val bakedIn: Boolean = false,
) {
    init {
        require(size > 0) { "preprocessing size $size" }
        require(mean.size == 3 && std.size == 3) { "preprocessing needs 3 means and 3 stds" }
        require(std.all { it != 0f }) { "preprocessing std has a zero" }
    }
}

/** An int8/uint8 tensor's affine quantization: real = (q - zeroPoint) * scale. */
data class Quant(val scale: Float, val zeroPoint: Int)

/**
 * ARGB pixels ([width] x [height], row by row, as Bitmap.getPixels gives them) to the model's input:
 * the centered square crop, resized to size x size (bilinear, pixel centers aligned), RGB (or BGR),
 * x * scale, then (x - mean[c]) / std[c]; laid out NCHW (or NHWC).
 */
fun preprocess(argb: IntArray, width: Int, height: Int, p: Preprocessing): FloatArray {
    require(width > 0 && height > 0 && argb.size >= width * height) { "image is ${argb.size} pixels, not $width x $height" }
    val s = p.size
    val crop = min(width, height)
    val x0 = (width - crop) / 2
    val y0 = (height - crop) / 2
    val step = crop.toDouble() / s
    val out = FloatArray(3 * s * s)
    val shifts = if (p.bgr) intArrayOf(0, 8, 16) else intArrayOf(16, 8, 0)  // bits of R, G, B in ARGB
    for (oy in 0 until s) {
        val sy = (y0 + (oy + 0.5) * step - 0.5).coerceIn(y0.toDouble(), (y0 + crop - 1).toDouble())
        val ya = floor(sy).toInt()
        val yb = min(ya + 1, y0 + crop - 1)
        val fy = sy - ya
        for (ox in 0 until s) {
            val sx = (x0 + (ox + 0.5) * step - 0.5).coerceIn(x0.toDouble(), (x0 + crop - 1).toDouble())
            val xa = floor(sx).toInt()
            val xb = min(xa + 1, x0 + crop - 1)
            val fx = sx - xa
            val p00 = argb[ya * width + xa]
            val p01 = argb[ya * width + xb]
            val p10 = argb[yb * width + xa]
            val p11 = argb[yb * width + xb]
            for (c in 0 until 3) {
                val sh = shifts[c]
                val top = channel(p00, sh) * (1 - fx) + channel(p01, sh) * fx
                val bottom = channel(p10, sh) * (1 - fx) + channel(p11, sh) * fx
                val v = top * (1 - fy) + bottom * fy
                val x = if (p.bakedIn) v else (v * p.scale - p.mean[c]) / p.std[c]
                val i = if (p.nhwc) (oy * s + ox) * 3 + c else (c * s + oy) * s + ox
                out[i] = x.toFloat()
            }
        }
    }
    return out
}

private fun channel(pixel: Int, shift: Int): Double = ((pixel ushr shift) and 0xFF).toDouble()

/** q = clamp(round(x / scale) + zeroPoint) into int8 (or uint8 when [unsigned]), as bytes. */
fun quantize(x: FloatArray, q: Quant, unsigned: Boolean): ByteArray {
    val lo = if (unsigned) 0 else -128
    val hi = if (unsigned) 255 else 127
    return ByteArray(x.size) { i -> (Math.round(x[i] / q.scale) + q.zeroPoint).coerceIn(lo, hi).toByte() }
}

/** (q - zeroPoint) * scale of int8 (or uint8 when [unsigned]) bytes. */
fun dequantize(bytes: ByteArray, q: Quant, unsigned: Boolean): FloatArray =
    FloatArray(bytes.size) { i ->
        val v = if (unsigned) bytes[i].toInt() and 0xFF else bytes[i].toInt()
        (v - q.zeroPoint) * q.scale
    }

/** Softmax of logits (shifted by the maximum, so large logits do not overflow). */
fun softmax(logits: FloatArray): FloatArray {
    if (logits.isEmpty()) return logits
    val m = logits.max()
    val e = DoubleArray(logits.size) { exp((logits[it] - m).toDouble()) }
    val sum = e.sum()
    return FloatArray(logits.size) { (e[it] / sum).toFloat() }
}

/** The [k] largest scores as (index, score), largest first. */
fun topK(scores: FloatArray, k: Int): List<Pair<Int, Float>> =
    scores.indices.sortedByDescending { scores[it] }.take(k).map { it to scores[it] }

/** A fixed synthetic ARGB test image (smooth color gradients with a checker pattern), the same on every device. */
fun syntheticImage(width: Int, height: Int): IntArray = IntArray(width * height) { i ->
    val x = i % width
    val y = i / width
    val r = x * 255 / maxOf(1, width - 1)
    val g = y * 255 / maxOf(1, height - 1)
    val b = if ((x / 16 + y / 16) % 2 == 0) 200 else 55
    (0xFF shl 24) or (r shl 16) or (g shl 8) or b
}
