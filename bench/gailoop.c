/* Benchmark load for the gai benches: COUNT getaddrinfo calls of NAME in a tight loop,
 * or paced at RATE calls per second when given; prints the mean nanoseconds per call and
 * the number of failed calls. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

static double elapsed_s(const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (b.tv_sec - a->tv_sec) + (b.tv_nsec - a->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: gailoop COUNT NAME [RATE]\n");
		return 2;
	}
	long count = atol(argv[1]), failed = 0;
	double rate = argc == 4 ? atof(argv[3]) : 0;
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	struct timespec a;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < count; i++) {
		if (rate > 0 && (i & 63) == 0) {
			double ahead = i / rate - elapsed_s(&a);
			if (ahead > 0) {
				struct timespec nap = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
				nanosleep(&nap, NULL);
			}
		}
		if (getaddrinfo(argv[2], NULL, &hints, &res) == 0)
			freeaddrinfo(res);
		else
			failed++;
	}
	printf("%.1f %ld\n", elapsed_s(&a) * 1e9 / count, failed);
	return 0;
}
