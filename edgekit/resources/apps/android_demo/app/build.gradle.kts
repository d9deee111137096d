plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// The runtime versions: the dependencies below and the "runtime.version" the latency report carries.
val executorchVersion = "1.0.1"  // org.pytorch:executorch-android (Maven Central)
val litertVersion = "1.4.0"      // com.google.ai.edge.litert:litert (Google Maven); 2.x drops org.tensorflow.lite.Interpreter
val cameraxVersion = "1.4.2"

android {
    namespace = "ai.edgekit.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "ai.edgekit.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "LITERT_VERSION", "\"$litertVersion\"")
        // ExecuTorch ships arm64-v8a and x86_64 (emulator) native libraries only
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            // signed with the debug key so that `./gradlew installRelease` works for benchmarking
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }

    buildFeatures {
        buildConfig = true
    }

    // the model stays uncompressed in the APK: copied (ExecuTorch) or mapped (LiteRT) as is
    androidResources {
        noCompress += listOf("pte", "tflite")
    }

    packaging {
        jniLibs {
            pickFirsts += "**/libc++_shared.so"
        }
    }
}

dependencies {
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.google.ai.edge.litert:litert:$litertVersion")

    implementation("androidx.camera:camera-core:$cameraxVersion")
    implementation("androidx.camera:camera-camera2:$cameraxVersion")
    implementation("androidx.camera:camera-lifecycle:$cameraxVersion")
    implementation("androidx.camera:camera-view:$cameraxVersion")

    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("com.google.android.material:material:1.12.0")
    implementation("androidx.constraintlayout:constraintlayout:2.2.0")

    testImplementation("junit:junit:4.13.2")
}
