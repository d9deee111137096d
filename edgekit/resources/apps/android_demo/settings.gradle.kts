pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()        // AndroidX, CameraX, Material, LiteRT
        mavenCentral()  // ExecuTorch (org.pytorch:executorch-android), fbjni, soloader
    }
}

rootProject.name = "edgekit-demo"
include(":app")
