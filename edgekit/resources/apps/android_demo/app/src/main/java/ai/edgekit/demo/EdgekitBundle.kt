package ai.edgekit.demo

import org.json.JSONArray
import org.json.JSONObject

const val BUNDLE_SCHEMA = "edgekit-bundle/1"

/** One tensor of edgekit_bundle.json: "input" or "output". */
class TensorSpec(val name: String, val shape: LongArray, val dtype: String, val quant: Quant?) {
    val numel: Long get() = shape.fold(1L) { a, d -> a * d }
}

/** The app's assets/edgekit_bundle.json, written by `edgekit demo bundle`. */
class EdgekitBundle(
    val modelFile: String,
    val runtime: String,
    val delegate: String?,
    val artifact: ArtifactInfo,
    val input: TensorSpec,
    val output: TensorSpec,
    val preprocessing: Preprocessing,
    val labelsFile: String,
    val warmup: Int,
    val runs: Int,
    val threads: Int,
    val deviceName: String,
) {
    companion object {
        fun parse(text: String): EdgekitBundle {
            val o = JSONObject(text)
            val schema = o.optString("schema")
            require(schema == BUNDLE_SCHEMA) { "edgekit_bundle.json has schema '$schema', not $BUNDLE_SCHEMA" }
            val runtime = o.getString("runtime")
            require(runtime == "executorch" || runtime == "tflite") {
                "this app runs executorch and tflite models, not $runtime; bundle a .pte or .tflite"
            }
            val input = tensor(o.getJSONObject("input"), "input")
            val a = o.getJSONObject("artifact")
            val p = o.getJSONObject("preprocessing")
            val b = o.optJSONObject("benchmark") ?: JSONObject()
            return EdgekitBundle(
                modelFile = o.getString("model_file"),
                runtime = runtime,
                delegate = o.stringOrNull("delegate") ?: "xnnpack",
                artifact = ArtifactInfo(
                    sha256 = a.getString("sha256"),
                    name = a.getString("name"),
                    bytes = a.getLong("bytes"),
                    model = a.stringOrNull("model"),
                    quantization = a.stringOrNull("quantization"),
                    inputShape = input.shape.toList(),
                ),
                input = input,
                output = tensor(o.getJSONObject("output"), "output"),
                preprocessing = Preprocessing(
                    size = p.getInt("size"),
                    mean = p.getJSONArray("mean").toFloats(),
                    std = p.getJSONArray("std").toFloats(),
                    scale = p.optDouble("scale", 1.0 / 255.0).toFloat(),
                    bgr = p.optString("color", "RGB").equals("BGR", ignoreCase = true),
                    nhwc = p.optString("layout", "NCHW").equals("NHWC", ignoreCase = true),
                    bakedIn = p.optBoolean("baked_in", false),
                ),
                labelsFile = o.optString("labels", "labels.txt"),
                warmup = b.optInt("warmup", 10),
                runs = b.optInt("runs", 50),
                threads = if (b.isNull("threads")) 0 else b.getInt("threads"),
                deviceName = o.stringOrNull("device_name") ?: "android-app",
            )
        }

        private fun tensor(t: JSONObject, what: String): TensorSpec {
            val shape = t.getJSONArray("shape")
            val dtype = t.optString("dtype", "float32")
            require(dtype in listOf("float32", "int8", "uint8")) { "$what dtype $dtype: the app handles float32, int8, uint8" }
            val quant = t.optJSONObject("quant")?.let { Quant(it.getDouble("scale").toFloat(), it.getInt("zero_point")) }
            require(dtype == "float32" || quant != null) { "$what is $dtype but has no quant (scale, zero_point)" }
            return TensorSpec(t.optString("name", what), LongArray(shape.length()) { shape.getLong(it) }, dtype, quant)
        }

        // org.json's optString gives "null" for a JSON null
        private fun JSONObject.stringOrNull(key: String): String? = if (isNull(key)) null else getString(key)

        private fun JSONArray.toFloats() = FloatArray(length()) { getDouble(it).toFloat() }
    }
}
