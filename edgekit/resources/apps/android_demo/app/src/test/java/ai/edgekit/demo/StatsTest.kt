package ai.edgekit.demo

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class StatsTest {
    @Test
    fun percentilesInterpolateLinearlyLikeNumpy() {
        val sorted = doubleArrayOf(1.0, 2.0, 3.0, 4.0)
        assertEquals(1.0, percentile(sorted, 0.0), 1e-12)
        assertEquals(2.5, percentile(sorted, 50.0), 1e-12)
        assertEquals(3.7, percentile(sorted, 90.0), 1e-12)  // numpy.percentile([1, 2, 3, 4], 90)
        assertEquals(1.75, percentile(sorted, 25.0), 1e-12)
        assertEquals(4.0, percentile(sorted, 100.0), 1e-12)
    }

    @Test
    fun summaryOfUnsortedSamples() {
        val s = summarize(listOf(4.0, 1.0, 3.0, 2.0, 10.0))
        assertEquals(1.0, s.min, 1e-12)
        assertEquals(3.0, s.median, 1e-12)
        assertEquals(4.0, s.mean, 1e-12)
        assertEquals(7.6, s.p90, 1e-12)  // 4 + 0.6 * (10 - 4)
        assertEquals(2.0, s.iqr, 1e-12)  // 4 - 2
    }

    @Test
    fun oneSample() {
        val s = summarize(listOf(2.5))
        assertEquals(Summary(2.5, 2.5, 2.5, 2.5, 0.0), s)
    }

    @Test
    fun timeRunsKeepsEveryRunInOrder() {
        var calls = 0
        val samples = timeRuns(5) { calls++ }
        assertEquals(5, calls)
        assertEquals(5, samples.size)
        assertTrue(samples.all { it >= 0.0 })
    }

    @Test
    fun roundingIsDecimal() {
        assertEquals(1.2346, roundTo(1.23456, 4), 0.0)
        assertEquals(0.0, roundTo(0.00004, 4), 0.0)
    }

    @Test
    fun reportJsonCarriesConsistentStatistics() {
        val report = LatencyReport(
            created = "2026-01-02T03:04:05+00:00",
            device = DeviceInfo("android-app", "Google \"Pixel\" 8", "Android 15 (API 35)"),
            runtime = RuntimeInfo("tflite", "1.4.0", "xnnpack"),
            artifact = ArtifactInfo("ab".repeat(32), "m.tflite", 10, "mobilevig_ti", null, listOf(1L, 3L, 32L, 32L)),
            threads = 4, warmup = 2, samplesMs = listOf(1.5, 1.0, 2.0), loadMs = 12.34, peakMemoryMb = null,
            notes = listOf("a note"),
        )
        val json = report.toJson()
        assertTrue(json.startsWith("{\n  \"schema\": \"edgekit-latency-report/1\",\n"))
        assertTrue(json.contains("\"model\": \"Google \\\"Pixel\\\" 8\""))
        assertTrue(json.contains("\"input_shape\": [1, 3, 32, 32]"))
        assertTrue(json.contains("\"runs\": 3,"))
        assertTrue(json.contains("\"samples_ms\": [1.5, 1.0, 2.0],"))
        assertTrue(json.contains("\"median_ms\": 1.5,"))
        assertTrue(json.contains("\"p90_ms\": 1.9,"))
        assertTrue(json.contains("\"quantization\": null,"))
        assertTrue(json.contains("\"compute_units\": null\n"))
        assertTrue(json.contains("\"peak_memory_mb\": null,"))
        assertTrue(json.endsWith("\"notes\": [\"a note\"]\n}\n"))
    }

    @Test
    fun numbersHaveAtMostFourDecimals() {
        assertEquals("2.0", Json.number(2.0))
        assertEquals("0.3333", Json.number(1.0 / 3))
        assertEquals("0.0001", Json.number(1e-4))
        assertEquals("12345678.0", Json.number(1.2345678e7))
        assertEquals("null", Json.number(Double.NaN))
    }
}
