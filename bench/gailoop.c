/* Benchmark load for the gai benches: COUNT getaddrinfo calls of NAME in a tight loop;
 * prints the mean nanoseconds per call and the number of failed calls. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: gailoop COUNT NAME\n");
		return 2;
	}
	long count = atol(argv[1]), failed = 0;
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < count; i++) {
		if (getaddrinfo(argv[2], NULL, &hints, &res) == 0)
			freeaddrinfo(res);
		else
			failed++;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%.1f %ld\n", ns / count, failed);
	return 0;
}
