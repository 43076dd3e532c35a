// A small line chart in SVG for the guest page's CPU and memory graphs: the last `capacity`
// samples, scaled to the largest of them (or to `max` when given).

const SVG = 'http://www.w3.org/2000/svg';

export class LineChart {
  readonly element: SVGSVGElement;
  private readonly line: SVGPolylineElement;
  private readonly label: SVGTextElement;
  private samples: number[] = [];

  constructor(
    private readonly title: string,
    private readonly format: (v: number) => string,
    private readonly max: number | null,
    private readonly capacity = 60,
    testid = '',
  ) {
    this.element = document.createElementNS(SVG, 'svg');
    this.element.setAttribute('viewBox', '0 0 300 100');
    this.element.setAttribute('class', 'chart');
    this.element.setAttribute('role', 'img');
    this.element.setAttribute('aria-label', title);
    if (testid) this.element.setAttribute('data-testid', testid);
    const frame = document.createElementNS(SVG, 'rect');
    frame.setAttribute('x', '0');
    frame.setAttribute('y', '0');
    frame.setAttribute('width', '300');
    frame.setAttribute('height', '100');
    frame.setAttribute('class', 'chart-frame');
    this.line = document.createElementNS(SVG, 'polyline');
    this.line.setAttribute('class', 'chart-line');
    this.label = document.createElementNS(SVG, 'text');
    this.label.setAttribute('x', '4');
    this.label.setAttribute('y', '14');
    this.label.setAttribute('class', 'chart-label');
    this.label.textContent = `${title}: -`;
    this.element.append(frame, this.line, this.label);
  }

  push(value: number): void {
    this.samples.push(value);
    if (this.samples.length > this.capacity) this.samples.shift();
    const top = this.max ?? Math.max(...this.samples, 1);
    const step = 300 / (this.capacity - 1);
    const points = this.samples.map((v, i) => {
      const x = (this.capacity - this.samples.length + i) * step;
      const y = 98 - (Math.min(v, top) / top) * 80;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute('points', points.join(' '));
    this.label.textContent = `${this.title}: ${this.format(value)}`;
    this.element.setAttribute('data-samples', String(this.samples.length));
  }
}
