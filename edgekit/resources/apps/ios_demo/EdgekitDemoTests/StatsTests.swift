import XCTest

final class StatsTests: XCTestCase {
    func testPercentilesInterpolateLinearlyLikeNumpy() {
        let sorted = [1.0, 2, 3, 4]
        // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 75, 90, 100])
        XCTAssertEqual(Stats.percentile(sorted: sorted, 0), 1)
        XCTAssertEqual(Stats.percentile(sorted: sorted, 25), 1.75, accuracy: 1e-12)
        XCTAssertEqual(Stats.percentile(sorted: sorted, 50), 2.5, accuracy: 1e-12)
        XCTAssertEqual(Stats.percentile(sorted: sorted, 75), 3.25, accuracy: 1e-12)
        XCTAssertEqual(Stats.percentile(sorted: sorted, 90), 3.7, accuracy: 1e-12)
        XCTAssertEqual(Stats.percentile(sorted: sorted, 100), 4)
    }

    func testSummaryOfUnsortedSamples() throws {
        let stats = try XCTUnwrap(LatencyStats(samples: [5, 1, 4, 2, 3]))
        XCTAssertEqual(stats.min, 1)
        XCTAssertEqual(stats.median, 3)
        XCTAssertEqual(stats.mean, 3)
        XCTAssertEqual(stats.p90, 4.6, accuracy: 1e-12)
        XCTAssertEqual(stats.iqr, 2, accuracy: 1e-12)  // 4 - 2
    }

    func testOneSampleAndNone() throws {
        let one = try XCTUnwrap(LatencyStats(samples: [2.5]))
        XCTAssertEqual(one, LatencyStats(samples: [2.5]))
        XCTAssertEqual(one.median, 2.5)
        XCTAssertEqual(one.p90, 2.5)
        XCTAssertEqual(one.iqr, 0)
        XCTAssertNil(LatencyStats(samples: []))
    }

    func testRounding() {
        XCTAssertEqual(Stats.rounded(1.234567), 1.2346)
        XCTAssertEqual(Stats.rounded(212.44449, places: 1), 212.4)
    }
}
