package ai.edgekit.demo

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class PreprocessTest {
    private val mean = floatArrayOf(0.485f, 0.456f, 0.406f)
    private val std = floatArrayOf(0.229f, 0.224f, 0.225f)

    private fun argb(r: Int, g: Int, b: Int) = (0xFF shl 24) or (r shl 16) or (g shl 8) or b

    @Test
    fun normalizesEachChannelIntoNchwPlanes() {
        val p = Preprocessing(2, mean, std)
        val out = preprocess(IntArray(4) { argb(255, 0, 51) }, 2, 2, p)
        assertEquals(12, out.size)
        for (i in 0 until 4) {
            assertEquals((1f - 0.485f) / 0.229f, out[i], 1e-5f)          // R plane
            assertEquals((0f - 0.456f) / 0.224f, out[4 + i], 1e-5f)      // G plane
            assertEquals((0.2f - 0.406f) / 0.225f, out[8 + i], 1e-5f)    // B plane
        }
    }

    @Test
    fun sameSizeIsTheIdentityAndKeepsPixelOrder() {
        val p = Preprocessing(2, floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f), scale = 1f)
        val img = intArrayOf(argb(10, 0, 0), argb(20, 0, 0), argb(30, 0, 0), argb(40, 0, 0))
        val out = preprocess(img, 2, 2, p)
        assertArrayEquals(floatArrayOf(10f, 20f, 30f, 40f), out.copyOfRange(0, 4), 1e-4f)
    }

    @Test
    fun centerCropsTheLongerSide() {
        // 4 x 2 image: a red column pair left and right, green in the middle square
        val img = IntArray(8) { i -> if (i % 4 == 0 || i % 4 == 3) argb(255, 0, 0) else argb(0, 255, 0) }
        val p = Preprocessing(2, floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f), scale = 1f)
        val out = preprocess(img, 4, 2, p)
        assertArrayEquals(FloatArray(4), out.copyOfRange(0, 4), 1e-4f)            // no red
        assertArrayEquals(FloatArray(4) { 255f }, out.copyOfRange(4, 8), 1e-4f)   // all green
    }

    @Test
    fun bilinearDownscaleAveragesNeighbours() {
        // 4 x 4 image with columns 0, 100, 100, 100: at size 2 the outputs sample x = 0.5 and x = 2.5
        val img = IntArray(16) { i -> if (i % 4 == 0) argb(0, 0, 0) else argb(100, 0, 0) }
        val p = Preprocessing(2, floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f), scale = 1f)
        val out = preprocess(img, 4, 4, p)
        assertArrayEquals(floatArrayOf(50f, 100f, 50f, 100f), out.copyOfRange(0, 4), 1e-4f)
    }

    @Test
    fun bgrAndNhwc() {
        val p = Preprocessing(1, floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f), scale = 1f, bgr = true, nhwc = true)
        val out = preprocess(intArrayOf(argb(1, 2, 3)), 1, 1, p)
        assertArrayEquals(floatArrayOf(3f, 2f, 1f), out, 0f)
    }

    @Test
    fun quantizeRoundsAndClamps() {
        val q = Quant(0.5f, 3)
        assertArrayEquals(byteArrayOf(3, 5, 127, -128), quantize(floatArrayOf(0f, 1f, 1000f, -1000f), q, unsigned = false))
        val u = quantize(floatArrayOf(-10f, 200f), Quant(1f, 0), unsigned = true)
        assertEquals(0, u[0].toInt() and 0xFF)
        assertEquals(200, u[1].toInt() and 0xFF)
        assertArrayEquals(floatArrayOf(-1.5f, 1f), dequantize(byteArrayOf(0, 5), q, unsigned = false), 0f)
        assertArrayEquals(floatArrayOf(100f), dequantize(u.copyOfRange(1, 2), Quant(0.5f, 0), unsigned = true), 0f)
    }

    @Test
    fun softmaxAndTopK() {
        val probs = softmax(floatArrayOf(1f, 3f, 2f, 1000f))
        assertEquals(1f, probs.sum(), 1e-5f)
        assertEquals(listOf(3, 1, 2), topK(probs, 3).map { it.first })
    }

    @Test
    fun syntheticImageIsFixed() {
        val a = syntheticImage(64, 48)
        assertEquals(64 * 48, a.size)
        assertArrayEquals(a, syntheticImage(64, 48))
        assertEquals(argb(0, 0, 200), a[0])
    }
}
